"""One cache chunk as a ``.npy`` file written straight to disk, past the page cache.

Why: ``ich prepare`` writes 128 KiB per slice (96 GB for RSNA) that it never reads back. A
buffered write first copies every page into the page cache, and on the virtual machines ich
runs on, each fresh page-cache page of an ext4 file costs ~10 µs of kernel time: ~0.3 ms per
slice, as much as all the preprocessing of the slice. With ``O_DIRECT`` the disk reads the
pages from this process's buffer instead (measured: 19 ms of waiting and no CPU per 32 MiB
chunk, against ~95 ms of CPU buffered).

``O_DIRECT`` needs the buffer, the file offsets and the write length aligned to the block
size, so :class:`ChunkBuffer` is one page-aligned buffer holding a 4 KiB ``.npy`` header
followed by the slices, which the preprocessing fills in place. The file is an ordinary
``.npy`` (``np.load`` and ``mmap_mode`` read it, the data page-aligned). Where the file system
refuses ``O_DIRECT`` (tmpfs, other systems) the same bytes are written the ordinary way.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from pathlib import Path

import numpy as np

#: Header size of a chunk file: the .npy preamble padded to one page, so the data are aligned.
HEADER_BYTES = 4096
_MAGIC = b"\x93NUMPY\x01\x00"  # format version 1.0: a 2-byte header length
_ALIGN = 4096  # the largest logical block size O_DIRECT asks for on Linux


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version 1.0 ``.npy`` header of exactly :data:`HEADER_BYTES` bytes (space padded)."""
    text = f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    body = len(_MAGIC) + 2
    padded = text.ljust(HEADER_BYTES - body - 1) + "\n"
    if len(padded) != HEADER_BYTES - body:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return _MAGIC + struct.pack("<H", len(padded)) + padded.encode("latin1")


class ChunkBuffer:
    """A page-aligned buffer for up to ``n`` int16 images of ``size`` × ``size`` pixels.

    Fill :attr:`images` (rows 0..k-1), then :meth:`write` the first k rows as a ``.npy``.

    Args:
        n: Capacity in images (the files of the chunk).
        size: Side of the square images.
    """

    def __init__(self, n: int, size: int) -> None:
        self.dtype = np.dtype(np.int16)
        self.image_bytes = size * size * self.dtype.itemsize
        total = HEADER_BYTES + _round_up(max(n, 1) * self.image_bytes, _ALIGN)
        self._buffer = mmap.mmap(-1, total)  # anonymous mappings start on a page boundary
        self.images: np.ndarray = np.frombuffer(
            self._buffer, self.dtype, count=n * size * size, offset=HEADER_BYTES
        ).reshape(n, size, size)

    def write(self, path: Path, count: int) -> None:
        """Write ``images[:count]`` to ``path`` as a ``.npy`` file (replaced if it exists)."""
        if not 0 <= count <= len(self.images):
            raise ValueError(f"count {count} outside 0..{len(self.images)}")
        shape = (count, *self.images.shape[1:])
        self._buffer[:HEADER_BYTES] = npy_header(shape, self.dtype)
        length = HEADER_BYTES + count * self.image_bytes
        with memoryview(self._buffer) as view:
            if not _write_direct(path, view, length):
                with open(path, "wb") as fh:
                    fh.write(view[:length])


_REUSED: dict[tuple[int, int], ChunkBuffer] = {}


def chunk_buffer(n: int, size: int) -> ChunkBuffer:
    """This process's buffer for ``n`` images of ``size`` px, reused from chunk to chunk.

    Why: a new 32 MiB buffer per chunk is 8,192 fresh pages to fault in (~10 ms of kernel
    time); a process builds one chunk at a time, so one buffer per shape serves them all.
    """
    key = (n, size)
    if key not in _REUSED:
        _REUSED.clear()  # the last chunk of a build is shorter: keep only one buffer
        _REUSED[key] = ChunkBuffer(n, size)
    return _REUSED[key]


def _write_direct(path: Path, view: memoryview, length: int) -> bool:
    """Write ``view[:length]`` with ``O_DIRECT``; False when the file system does not allow it.

    The write is rounded up to whole blocks (what ``O_DIRECT`` requires) and the file then cut
    back to ``length``.
    """
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o644)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    try:
        done, end = 0, _round_up(length, _ALIGN)
        while done < end:
            done += os.write(fd, view[done:end])
        os.ftruncate(fd, length)
    except OSError as exc:
        if exc.errno != errno.EINVAL or done:
            raise
        return False  # O_DIRECT accepted at open but not for writes: write it the usual way
    finally:
        os.close(fd)
    return True
