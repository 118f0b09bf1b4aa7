"""Chunk files: page-aligned .npy written with O_DIRECT (or the ordinary way), read by numpy."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from ich.data import chunkfile
from ich.data.chunkfile import HEADER_BYTES, ChunkBuffer, chunk_buffer, npy_header


def _filled(n: int, size: int, seed: int = 0) -> ChunkBuffer:
    buffer = ChunkBuffer(n, size)
    rng = np.random.default_rng(seed)
    buffer.images[:] = rng.integers(-2000, 3000, buffer.images.shape, dtype=np.int16)
    return buffer


@pytest.mark.parametrize(("n", "size", "count"), [(5, 256, 5), (7, 96, 4), (3, 32, 3), (4, 64, 0)])
def test_written_file_is_a_plain_npy(tmp_path: Path, n: int, size: int, count: int) -> None:
    # 96 and 32 px images are not whole blocks: the write is padded, then the file cut back.
    buffer = _filled(n, size)
    path = tmp_path / "c.npy"
    buffer.write(path, count)
    assert path.stat().st_size == HEADER_BYTES + count * size * size * 2
    loaded = np.load(path)
    assert loaded.dtype == np.int16 and loaded.shape == (count, size, size)
    np.testing.assert_array_equal(loaded, buffer.images[:count])
    mapped = np.load(path, mmap_mode="r")
    assert mapped.offset == HEADER_BYTES  # type: ignore[attr-defined]
    np.testing.assert_array_equal(mapped, buffer.images[:count])


def test_rewrite_replaces_a_longer_file(tmp_path: Path) -> None:
    path = tmp_path / "c.npy"
    path.write_bytes(b"x" * 3 * 2**20)
    buffer = _filled(4, 64)
    buffer.write(path, 2)
    np.testing.assert_array_equal(np.load(path), buffer.images[:2])


def test_falls_back_when_o_direct_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    calls: list[int] = []

    def refusing_open(path: str | Path, flags: int, mode: int = 0o777) -> int:
        calls.append(flags)
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")  # what tmpfs answers
        return real_open(path, flags, mode)

    monkeypatch.setattr(chunkfile.os, "open", refusing_open)
    buffer = _filled(3, 96)
    path = tmp_path / "c.npy"
    buffer.write(path, 3)
    np.testing.assert_array_equal(np.load(path), buffer.images)
    if getattr(os, "O_DIRECT", 0):
        assert calls  # the direct write was tried first


def test_other_write_errors_are_not_hidden(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        _filled(2, 32).write(tmp_path / "missing" / "c.npy", 2)
    with pytest.raises(ValueError, match="count"):
        _filled(2, 32).write(tmp_path / "c.npy", 3)


def test_header_is_one_page_and_buffer_is_reused() -> None:
    header = npy_header((1024, 256, 256), np.dtype(np.int16))
    assert len(header) == HEADER_BYTES and header.endswith(b"\n")
    assert chunk_buffer(8, 32) is chunk_buffer(8, 32)
    assert chunk_buffer(9, 32) is not chunk_buffer(8, 32)
