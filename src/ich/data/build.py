"""Building a preprocessing cache (``ich prepare``): chunks in parallel, then the catalog.

The layout is described in :mod:`ich.data.cache`, which reads what this module writes. The
sorted file list is cut into fixed chunks; each is preprocessed by one process into a page-aligned
buffer (:mod:`ich.data.chunkfile`), written to temporary files and renamed into place, its row
table last. Workers are forked when that is safe, else started through forkserver while this
process works on the first chunks (see :func:`_run_tasks`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from ich.atomic import atomic_write_text
from ich.data.cache import CACHE_FORMAT, chunk_paths
from ich.data.catalog import (
    assemble_catalog,
    check_cache_labels,
    describe_skipped,
    list_dicom_files,
    skipped_files,
    write_parquet_atomic,
    write_rows,
)
from ich.data.chunkfile import chunk_buffer
from ich.data.images import (
    IMAGE_SUFFIXES,
    ImageEncoding,
    list_image_files,
    preprocess_image_files,
    skipped_image_files,
)
from ich.data.preprocess import PreprocessSpec, preprocess_files
from ich.data.summary import CacheSummary, fill_counts, format_summary  # noqa: F401
from ich.data.workers import (
    _fork_pool,
    _init_worker,
    _spawn_context,
    can_fork,
)
from ich.errors import CacheError
from ich.labels import LABELS, labels_digest, match_files, read_labels, read_patient_groups

#: Files per chunk unless the folder is small (see :func:`auto_chunk_size`).
DEFAULT_CHUNK_SIZE = 1024


def _write_json_atomic(data: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _check_folder(out: Path, spec: PreprocessSpec, chunk_size: int, force: bool) -> None:
    """Refuse a folder holding a cache built with other settings (unless ``force``)."""
    manifest = out / "build.json"
    if force:
        for name in ("cache.json", "catalog.parquet", "build.json"):
            (out / name).unlink(missing_ok=True)
        if (out / "chunks").is_dir():
            shutil.rmtree(out / "chunks")
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        if old.get("spec_key") != spec.key() or old.get("chunk_size") != chunk_size:
            raise CacheError(
                f"{out} holds a cache built with other settings ({old.get('spec')}, chunk size "
                f"{old.get('chunk_size')}); use another --out, or --force to rebuild it"
            )
    elif (
        out.is_dir()
        and any(p.name != "chunks" for p in out.iterdir())
        and not (out / "cache.json").exists()
    ):
        raise CacheError(f"{out} exists and is not an ich cache; choose an empty --out")
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    info = {"format": CACHE_FORMAT, "spec": spec.to_dict(), "spec_key": spec.key()}
    _write_json_atomic({**info, "chunk_size": chunk_size}, manifest)


def _chunk_done(root: Path, k: int, files: list[Path]) -> bool:
    """A chunk is done when both files exist and it holds exactly the expected files."""
    npy, rows = chunk_paths(root, k)
    if not (npy.is_file() and rows.is_file()):
        return False
    try:
        done = pd.read_parquet(rows, columns=["path"])["path"].tolist()
    except (OSError, ValueError, pa.ArrowException):  # unreadable table: rebuild the chunk
        return False
    return done == [str(p) for p in files]


#: One chunk's work: (chunk number, its files, cache folder, settings, strict, image encoding
#: or None for DICOM).
_Task = tuple[int, list[Path], Path, PreprocessSpec, bool, ImageEncoding | None]


def _build_chunk(task: _Task) -> tuple[int, int]:
    """Worker: preprocess one chunk and move its two files into place. Returns (k, n_files)."""
    k, files, root, spec, strict, encoding = task
    buffer = chunk_buffer(len(files), spec.size)  # reused from this process's last chunk
    if encoding is None:
        block, rows = preprocess_files(files, spec, chunk=k, strict=strict, out=buffer.images)
    else:
        block, rows = preprocess_image_files(files, spec, k, encoding, strict, buffer.images)
    npy, table = chunk_paths(root, k)
    tmp_npy = npy.with_name(f"{npy.name}.{os.getpid()}.tmp")
    buffer.write(tmp_npy, len(block))
    tmp_table = table.with_name(f"{table.name}.{os.getpid()}.tmp")
    write_rows(rows, tmp_table)
    os.replace(tmp_npy, npy)
    os.replace(tmp_table, table)  # last: its presence marks the chunk finished
    return k, len(files)


def _run_tasks(tasks: list[_Task], workers: int, pool: Any, bar: tqdm) -> None:
    """Build the chunks: in this process, in ``pool`` (already forked), or in a pool started now.

    Why the thread: starting a forkserver/spawn pool takes ~1 s, so this process builds chunks
    itself until the workers are up, then hands the rest to them; the start-up is hidden behind
    useful work instead of added to every build.
    """
    if workers == 1:
        for task in tasks:
            bar.update(_build_chunk(task)[1])
        return
    queue = deque(tasks)
    if pool is None:
        started: dict[str, Any] = {}

        def start() -> None:
            try:
                started["pool"] = _spawn_context().Pool(workers, initializer=_init_worker)
            except BaseException as exc:  # re-raised below, in this thread
                started["error"] = exc

        thread = threading.Thread(target=start, name="ich-pool-start", daemon=True)
        thread.start()
        try:
            while queue and thread.is_alive():
                bar.update(_build_chunk(queue.popleft())[1])
        except BaseException:
            thread.join()
            if "pool" in started:
                started["pool"].terminate()
            raise
        thread.join()
        if "error" in started:
            raise started["error"]
        pool = started["pool"]
    with pool:
        for _, n in pool.imap_unordered(_build_chunk, list(queue)):
            bar.update(n)


def _remove_tmp(root: Path) -> None:
    for tmp in (root / "chunks").glob("*.tmp"):
        tmp.unlink(missing_ok=True)


def build_cache(
    dicom_dir: str | Path,
    out: str | Path,
    labels_csv: str | Path | None = None,
    spec: PreprocessSpec | None = None,
    workers: int | None = None,
    shard: tuple[int, int] = (0, 1),
    strict: bool = False,
    progress: bool = True,
    chunk_size: int | None = None,
    all_files: bool = False,
    force: bool = False,
    soft_labels: bool = False,
    relabel: bool = False,
    images: ImageEncoding | None = None,
) -> CacheSummary:
    """Build (or resume) a preprocessing cache from a folder of DICOM files.

    Args:
        dicom_dir: Folder searched recursively for ``*.dcm`` (every file with ``all_files``).
        out: Cache folder (created).
        labels_csv: Label CSV (Kaggle long ``ID,Label`` or wide ``ID|file,any,...``) joined
            into the catalog; validated, and matched against the file names, before any image
            is read.
        spec: Preprocessing settings (default :class:`PreprocessSpec`); a folder built with
            other settings is refused (CacheError).
        workers: Processes (default: all cores); 1 runs in this process.
        shard: ``(i, n)``: build only chunks k with k % n == i (several machines, one folder).
        strict: Stop at the first bad file (CacheError naming it) instead of recording it.
        progress: Show a tqdm bar over files (stderr).
        chunk_size: Files per chunk (fixed for the life of a cache folder); None: the folder's
            own, or :func:`auto_chunk_size` for a new one (small folders use every worker).
        all_files: Take every file, not only ``*.dcm`` (DICOM without extension).
        force: Delete a cache built with other settings instead of refusing.
        soft_labels: Accept label values in [0, 1] (stored as they are) instead of only 0/1.
        relabel: Replace the labels of a cache built with other labels (else CacheError).
        images: Read PNG/JPEG/TIFF slices encoded this way instead of DICOM
            (:mod:`ich.data.images`); the spec gets the encoding's ``hu_range``.

    Returns:
        A :class:`CacheSummary`; ``finalized`` is False while other shards' chunks are missing.
    """
    start = time.perf_counter()
    spec = spec or PreprocessSpec()
    root, out = Path(dicom_dir).resolve(), Path(out)
    if not root.is_dir():
        raise CacheError(f"{root}: not a folder")
    index, n_shards = shard
    if not 0 <= index < n_shards:
        raise CacheError(f"shard {index}/{n_shards}: expected 0 <= I < N")
    # Every check that can fail runs before anything is written (no half-made cache folder).
    labels = read_labels(labels_csv, soft=soft_labels) if labels_csv is not None else None
    if images is not None:
        spec = images.spec(spec)
        files = list_image_files(root)
        skipped = skipped_image_files(root)
        wanted = "image files (" + ", ".join(IMAGE_SUFFIXES) + ")"
    else:
        files = list_dicom_files(root, all_files)
        skipped = skipped_files(root, all_files)
        wanted = "files" if all_files else "*.dcm files"
    if not files:
        other = f"; {describe_skipped(skipped, root, all_files or bool(images))}" if skipped else ""
        raise CacheError(f"{root}: no {wanted} found{other}")
    labelled, unused = (None, 0)
    if labels is not None:
        labelled, unused = match_files(labels, [p.name for p in files], str(labels_csv))
    relabelled = check_cache_labels(out, labels, labels_csv, relabel or force, spec.key())
    workers = workers or os.cpu_count() or 1
    if chunk_size is None:
        chunk_size = _folder_chunk_size(out, force) or (
            auto_chunk_size(len(files), workers) if n_shards == 1 else DEFAULT_CHUNK_SIZE)
    if chunk_size < 1:
        raise CacheError(f"chunk size {chunk_size}: must be at least 1")
    _check_folder(out, spec, chunk_size, force)
    if n_shards == 1:
        _remove_tmp(out)  # leftovers of a killed run; never read
    n_chunks = (len(files) + chunk_size - 1) // chunk_size
    mine = [k for k in range(n_chunks) if k % n_shards == index]
    parts = {k: files[k * chunk_size : (k + 1) * chunk_size] for k in mine}
    todo = [k for k in mine if not _chunk_done(out, k, parts[k])]
    tasks = [(k, parts[k], out, spec, strict, images) for k in todo]
    n_todo = sum(len(t[1]) for t in tasks)
    workers = max(1, min(workers, len(tasks)))
    # Forked before the progress bar, whose monitor thread would make forking unsafe.
    pool = _fork_pool(workers) if workers > 1 and can_fork() else None
    bar = tqdm(total=n_todo, unit="slice", disable=not progress, file=sys.stderr, desc="prepare")
    try:
        _run_tasks(tasks, workers, pool, bar)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()  # no-op after a clean finish (the with block closed it)
    finalized = all(chunk_paths(out, k)[1].is_file() for k in range(n_chunks))
    catalog = (
        finalize_cache(out, labels, n_chunks, labels_csv=labels_csv, soft_labels=soft_labels)
        if finalized else None
    )
    summary = CacheSummary(
        out=out, files=len(files), ok=0, failed=0, chunks_built=len(todo),
        chunks_skipped=len(mine) - len(todo), chunks_total=n_chunks,
        seconds=time.perf_counter() - start, finalized=finalized, processed=n_todo,
        labelled=labelled, label_rows_unused=unused, relabelled=relabelled,
        chunk_size=chunk_size, workers=workers,
        notes=[describe_skipped(skipped, root, all_files or bool(images))] if skipped else [],
    )
    if catalog is not None:
        fill_counts(summary, catalog)
    return summary


def finalize_cache(
    out: str | Path,
    labels: str | Path | pd.DataFrame | None = None,
    n_chunks: int | None = None,
    labels_csv: str | Path | None = None,
    soft_labels: bool = False,
) -> pd.DataFrame:
    """Merge the chunk tables into ``catalog.parquet`` (ordered, labelled) and write cache.json.

    A wide label file's ``patient_id`` column (:func:`ich.labels.read_patient_groups`) sets
    the patient of the images it names (image folders carry none).

    Runs once every chunk exists; safe to rerun (e.g. with another label CSV).

    Args:
        out: The cache folder.
        labels: A label CSV, or a table validated by :func:`ich.labels.read_labels`.
        n_chunks: Chunks to merge (default: every chunk table present).
        labels_csv: Where ``labels`` came from, recorded in cache.json (default: ``labels``
            when it is a path).
        soft_labels: Whether the labels may be probabilities (recorded in cache.json).
    """
    out = Path(out)
    if labels is not None and not isinstance(labels, pd.DataFrame):
        labels_csv = labels_csv or labels
        labels = read_labels(labels, soft=soft_labels)
    manifest = json.loads((out / "build.json").read_text())
    if n_chunks is None:
        n_chunks = len(list((out / "chunks").glob("*.parquet")))
    tables = (pd.read_parquet(chunk_paths(out, k)[1]) for k in range(n_chunks))
    patients = read_patient_groups(labels_csv) if labels_csv is not None else None
    catalog = assemble_catalog(tables, labels, patients)
    write_parquet_atomic(catalog, out / "catalog.parquet")
    ok = int((catalog["status"] == "ok").sum())
    names = [str(c) for c in labels.columns] if labels is not None else list(LABELS)
    info = {
        "format": CACHE_FORMAT, "spec": manifest["spec"], "spec_key": manifest["spec_key"],
        "chunk_size": manifest["chunk_size"], "chunks": n_chunks,
        "counts": {"files": len(catalog), "ok": ok, "error": len(catalog) - ok},
        "labels_csv": str(labels_csv) if labels_csv else None,
        "label_names": names,
        "patients_from_labels": patients is not None,
        "has_labels": bool(ok) and bool(catalog.loc[: ok - 1, names].notna().all(axis=None)),
        "labels_digest": labels_digest(labels) if labels is not None else None,
        "soft_labels": bool(soft_labels),
    }
    _remove_tmp(out)
    _write_json_atomic(info, out / "cache.json")
    return catalog


def auto_chunk_size(n_files: int, workers: int) -> int:
    """Files per chunk for a new cache: the default, or fewer so every worker gets a chunk.

    Why: a chunk is one worker's unit of work, so 300 files in one 1,024-file chunk would run
    on one core however many ``--workers`` were asked for.
    """
    return max(1, min(DEFAULT_CHUNK_SIZE, -(-n_files // max(1, workers))))


def _folder_chunk_size(out: Path, force: bool) -> int | None:
    """The chunk size a folder was started with (a resumed build keeps it), else None."""
    manifest = out / "build.json"
    if force or not manifest.is_file():
        return None
    try:
        return int(json.loads(manifest.read_text())["chunk_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
