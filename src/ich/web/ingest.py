"""Upload → stored files → validated DICOM slices → studies and series → queued jobs.

Why this order: every file is first copied under its content hash (never under the name the
browser sent), then decoded with ``ich.dicom.io.read_slice``; files that are not usable CT
slices are reported with the reason while the rest of the upload carries on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ich.dicom.io import Slice, SliceMeta, read_slice
from ich.errors import DicomReadError, IchError
from ich.web.store import Store, new_id

log = logging.getLogger("ich.web")

ZIP_MAGIC = b"PK\x03\x04"
#: Unpacked bytes allowed per byte of .zip (guards against zip bombs).
MAX_ZIP_RATIO = 200


class UploadTooLargeError(IchError):
    """The upload exceeds the configured file-count or size limit (HTTP 413)."""


@dataclass
class IngestResult:
    """What an upload became: its study ids (in upload order) and per-file errors.

    ``existing`` lists the ids among ``study_ids`` that were already stored with exactly the
    same files (nothing new was queued for them); ``merged`` those that completed a stored
    partial study of the same StudyInstanceUID (same id, now with every file); ``skipped``
    the .zip members not read, each with the reason.
    """

    study_ids: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    n_files: int = 0
    existing: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def hash_id(value: str) -> str:
    """A short one-way digest of an identifier, for logs (no patient data in logs)."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


def display_name(name: str | None) -> str:
    """The sent file name cleaned for display only (it is never used as a path)."""
    text = (name or "unnamed").replace("\\", "/")
    return "".join(ch for ch in text if ch.isprintable())[-200:] or "unnamed"


def member_name(name: str) -> str:
    """A .zip member's name cleaned for display, backslashes kept (they are why it is skipped)."""
    return "".join(ch for ch in name if ch.isprintable())[-200:] or "unnamed"


def _store_stream(store: Store, stream: IO[bytes]) -> str:
    """Copy a stream into the content-addressed file area; return its SHA-256."""
    digest = hashlib.sha256()
    incoming = store.root / "files"
    fd, tmp = tempfile.mkstemp(dir=incoming, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        store.hold(sha)
        dest = store.file_path(sha)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)
    except BaseException:  # a stream broken half-way leaves no partial copy behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha


def _expand(
    items: Iterable[tuple[str, IO[bytes]]], max_files: int, max_bytes: int,
    skipped: list[dict[str, str]],
) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield (display name, stream) for every file, unpacking .zip archives in place
    (members not read are appended to ``skipped`` with the reason)."""
    count = 0
    for name, stream in items:
        head = stream.read(4)
        stream.seek(0)
        members: list[tuple[str, IO[bytes]]] = [(name, stream)]
        if head == ZIP_MAGIC:
            members = list(_zip_members(name, stream, max_bytes, skipped))
        for member in members:
            count += 1
            if count > max_files:
                raise UploadTooLargeError(f"too many files: the limit is {max_files} per upload")
            yield member


def skip_reason(member: str, is_dir: bool) -> str | None:
    """Why a .zip member is not read, or None to read it.

    The .zip format (APPNOTE 4.4.17) allows only ``/`` as separator; a backslash in a member
    name is either a non-conforming Windows tool or a crafted name, and guessing which folder
    it meant could silently mix files of different folders, so such members are skipped.
    Folders, hidden files and macOS resource forks are skipped too; every skip is listed, so
    nothing disappears silently.
    """
    if "\\" in member:
        return "backslash in the member name (not a .zip path separator): re-create the " \
               "archive with a tool that writes '/'"
    if is_dir or member.endswith("/"):
        return "folder entry (its files are read on their own)"
    if member.startswith("__MACOSX/") or "/__MACOSX/" in member:
        return "macOS resource fork (__MACOSX), not an image"
    if member.rsplit("/", 1)[-1].startswith("."):
        return "hidden file (name starts with '.'), not an image"
    return None


def _zip_members(
    name: str, stream: IO[bytes], max_bytes: int, skipped: list[dict[str, str]]
) -> Iterator[tuple[str, IO[bytes]]]:
    """The regular files inside a .zip, refusing archives that unpack beyond the limits."""
    try:
        archive = zipfile.ZipFile(stream)
        infos = []
        for info in archive.infolist():
            why = skip_reason(info.filename, info.is_dir())
            if why is None:
                infos.append(info)
            else:
                skipped.append({"file": f"{display_name(name)}/{member_name(info.filename)}",
                                "reason": why})
    except zipfile.BadZipFile as exc:
        raise _ZipBrokenError(name, f"broken .zip archive ({exc})") from exc
    packed = max(1, sum(i.compress_size for i in infos))
    unpacked = sum(i.file_size for i in infos)
    if unpacked > max_bytes or unpacked > packed * MAX_ZIP_RATIO + (64 << 20):
        raise UploadTooLargeError(f"{display_name(name)} unpacks to {unpacked} bytes: too large")
    for info in infos:
        yield f"{display_name(name)}/{display_name(info.filename)}", archive.open(info)


class _ZipBrokenError(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name, self.reason = name, reason


def slice_z(meta: SliceMeta, fallback: float) -> float:
    """Position along the slice normal (IPP · (row × column cosines)), DICOM PS3.3 C.7.6.2.

    Falls back to (0020,0013) Instance Number, then upload order, when geometry is missing.
    """
    iop, ipp = meta.image_orientation_patient, meta.image_position_patient
    if iop is not None and ipp is not None:
        normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
        return float(np.dot(normal, np.asarray(ipp)))
    if ipp is not None:
        return float(ipp[2])
    return float(meta.instance_number if meta.instance_number is not None else fallback)


def ingest(
    store: Store, items: Iterable[tuple[str, IO[bytes]]], max_files: int, max_bytes: int
) -> IngestResult:
    """Store and decode every file, group slices into series and studies, and queue jobs.

    Files that end up in no study (not CT, truncated, duplicates, or all files of an upload
    that failed) are removed again before this returns: a stored file always belongs to a row.

    Raises:
        UploadTooLargeError: more files or bytes than allowed (nothing is queued then).
    """
    result = IngestResult()
    held: list[str] = []
    try:
        _ingest(store, items, max_files, max_bytes, result, held)
    finally:
        store.release(held)
    return result


def _ingest(store: Store, items: Iterable[tuple[str, IO[bytes]]], max_files: int,
            max_bytes: int, result: IngestResult, held: list[str]) -> None:
    decoded: list[tuple[Slice, str, str]] = []  # slice, sha256, display name
    try:
        for name, stream in _expand(items, max_files, max_bytes, result.skipped):
            result.n_files += 1
            sha = _store_stream(store, stream)
            held.append(sha)
            try:
                decoded.append((read_slice(store.file_path(sha)), sha, name))
            except DicomReadError as exc:
                result.errors.append({"file": name, "reason": exc_reason(exc)})
    except _ZipBrokenError as exc:
        result.errors.append({"file": display_name(exc.name), "reason": exc.reason})
    groups: dict[str, dict[str, list[tuple[Slice, str, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for item in decoded:
        meta = item[0].meta
        groups[meta.study_instance_uid][meta.series_instance_uid].append(item)
    # (study uid, the stored study it repeats or None, its new series, the stored study it
    # completes or None), in upload order.
    planned: list[tuple[str, str | None, list[dict[str, Any]], str | None]] = []
    for study_uid, series_map in groups.items():
        hashes = {sha for group in series_map.values() for _, sha, _ in group}
        known = store.find_study(study_uid, hashes)
        if known is not None:
            planned.append((study_uid, known, [], None))
            continue
        rows = [_build_series(store, group, result.errors) for group in series_map.values()]
        rows = [s for s in rows if s["slices"]]
        if rows:
            planned.append((study_uid, None, rows, store.find_partial(study_uid, hashes)))
    built = [uid for uid, known, _, _ in planned if known is None]
    for study_uid, known, rows, partial in planned:  # after all series: all file errors known
        if known is not None:
            result.study_ids.append(known)
            result.existing.append(known)
            continue
        first = rows[0]["slices"][0]["meta"]
        study = {"study_instance_uid": study_uid, "patient_id": first["patient_id"],
                 "description": ""}
        result.study_ids.append(store.add_study(study, rows, result.errors, replace=partial))
        if partial is not None:
            result.merged.append(partial)
    # StudyInstanceUIDs only as one-way digests: logs must not carry identifiers.
    log.info("upload: %d files, %d errors, %d skipped, studies %s", result.n_files,
             len(result.errors), len(result.skipped),
             ",".join(hash_id(uid) for uid in built) or "none")


def exc_reason(exc: DicomReadError) -> str:
    """The reason of a read error without the server-side path (which is a hash, not useful)."""
    reason = getattr(exc, "reason", None)
    tag = getattr(exc, "tag", None)
    text = str(reason) if reason else str(exc)
    return f"{text} {tag}" if tag else text


def _build_series(
    store: Store, items: list[tuple[Slice, str, str]], errors: list[dict[str, str]]
) -> dict[str, Any]:
    """Order one series along the normal, drop duplicates and odd sizes, save its HU stack."""
    zs = [slice_z(s.meta, i) for i, (s, _, _) in enumerate(items)]
    order = sorted(range(len(items)), key=lambda i: zs[i])
    shapes = [items[i][0].hu.shape for i in order]
    common = max(set(shapes), key=shapes.count)
    kept, seen = [], set()
    for i in order:
        sl, sha, name = items[i]
        if sl.meta.sop_instance_uid in seen:
            errors.append({"file": name, "reason": "duplicate SOPInstanceUID in this upload"})
            continue
        if sl.hu.shape != common:
            errors.append({"file": name, "reason": f"image size {sl.hu.shape} differs from the "
                           f"rest of its series {common}"})
            continue
        seen.add(sl.meta.sop_instance_uid)
        kept.append((sl, sha, zs[i]))
    series_id = new_id()
    if kept:
        store.save_array(series_id, np.stack([sl.hu for sl, _, _ in kept]))
    return {
        "id": series_id,
        "series_instance_uid": items[0][0].meta.series_instance_uid,
        "rows": int(common[0]), "columns": int(common[1]),
        "slices": [{"sop_instance_uid": sl.meta.sop_instance_uid, "z": z, "sha256": sha,
                    "meta": _meta_json(sl.meta)} for sl, sha, z in kept],
    }


def _meta_json(meta: SliceMeta) -> dict[str, Any]:
    """SliceMeta as JSON-ready dict without the server-side path."""
    out = meta.to_dict()
    out.pop("path", None)
    return out
