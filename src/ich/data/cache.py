"""The preprocessing cache: decode every DICOM once, read int16 HU at random forever after.

Layout of a cache folder ``CACHE``::

    CACHE/cache.json            format, PreprocessSpec (+ its key), chunk size, counts
    CACHE/catalog.parquet       one row per input file (see ich.data.catalog)
    CACHE/chunks/NNNNN.npy      int16 (n_ok, size, size): the ok slices of chunk NNNNN
    CACHE/chunks/NNNNN.parquet  the chunk's catalog rows (written last: marks the chunk done)

Why chunks: the sorted file list is cut into fixed chunks (chunk k = files[k*c:(k+1)*c]), each
built by one worker process into a temporary file and renamed into place. A killed run leaves
only ``*.tmp`` files (removed on the next run), a rerun skips finished chunks, and ``--shard I/N``
lets several processes or machines build chunks k with k % N == I into one folder. Memory is
bounded by one chunk per worker, whatever the number of files. :func:`build_cache` writes a
cache, :class:`SliceCache` reads one (training), :func:`ich.data.preprocess.preprocess_hu` is the
per-slice transform shared with inference.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from ich.atomic import atomic_write_text
from ich.data.catalog import assemble_catalog, list_dicom_files, write_parquet_atomic, write_rows
from ich.data.chunkfile import chunk_buffer
from ich.data.preprocess import PreprocessSpec, preprocess_files
from ich.errors import CacheError
from ich.labels import LABELS

#: Written into cache.json; bumped when the layout changes.
CACHE_FORMAT = "ich-cache/1"


def chunk_paths(root: Path, k: int) -> tuple[Path, Path]:
    """(images .npy, rows .parquet) of chunk ``k``."""
    base = root / "chunks" / f"{k:05d}"
    return base.with_suffix(".npy"), base.with_suffix(".parquet")


def read_cache_json(root: Path) -> dict[str, Any]:
    """The cache's description; CacheError when the folder is not a finished cache."""
    path = Path(root) / "cache.json"
    if not path.is_file():
        raise CacheError(f"{root}: not a finished ich cache (no cache.json); run `ich prepare`")
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable ({exc})") from exc
    if info.get("format") != CACHE_FORMAT:
        raise CacheError(f"{path}: format {info.get('format')!r}, expected {CACHE_FORMAT!r}")
    return info


class SliceCache:
    """Random access to the preprocessed slices of a cache folder.

    The *cache index* 0..N-1 numbers the ok slices ordered by (study, series, slice_index);
    :attr:`catalog` row ``i`` describes image ``i``. Chunk arrays are memory-mapped lazily, per
    process: the object pickles without its maps, so DataLoader workers (fork or spawn) each open
    their own.

    Args:
        root: The cache folder written by :func:`build_cache` / ``ich prepare``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info = read_cache_json(self.root)
        self.info = info
        self.spec = PreprocessSpec.from_dict(info["spec"])
        self.size = self.spec.size
        full = pd.read_parquet(self.root / "catalog.parquet")
        ok = full["status"] == "ok"
        self._errors = full[~ok].reset_index(drop=True)
        cat = full[ok].sort_values(
            ["study_instance_uid", "series_instance_uid", "slice_index"], kind="stable"
        )
        self.catalog: pd.DataFrame = cat.reset_index(drop=True)
        self._chunk = self.catalog["chunk"].to_numpy(dtype=np.int64)
        self._row = self.catalog["row"].to_numpy(dtype=np.int64)
        self._labels = self.catalog[list(LABELS)].to_numpy(dtype=np.float32)
        series = self.catalog["series_instance_uid"].astype(str).to_numpy()
        starts = np.r_[True, series[1:] != series[:-1]] if len(series) else np.zeros(0, bool)
        start_pos = np.flatnonzero(starts)
        ends = np.r_[start_pos[1:], len(series)]
        lengths = ends - start_pos
        self._series_start = np.repeat(start_pos, lengths)
        self._series_end = np.repeat(ends, lengths)  # exclusive
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._chunk)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}  # never pickle open memmaps: each process maps its own
        return state

    def _map(self, k: int) -> np.ndarray:
        arr = self._maps.get(k)
        if arr is None:
            path, _ = chunk_paths(self.root, k)
            try:
                arr = np.load(path, mmap_mode="r")
            except OSError as exc:
                raise CacheError(f"{path}: chunk missing or unreadable ({exc}); rebuild") from exc
            self._maps[k] = arr
        return arr

    def image(self, i: int) -> np.ndarray:
        """int16 (size, size) HU of cache index ``i`` (a copy, safe to modify)."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"cache index {i} out of range 0..{len(self) - 1}")
        return np.array(self._map(int(self._chunk[i]))[self._row[i]])

    def images(self, idx: np.ndarray | list[int]) -> np.ndarray:
        """int16 (n, size, size) for several cache indices, read chunk by chunk."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = np.empty((len(idx), self.size, self.size), dtype=np.int16)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"cache indices out of range 0..{len(self) - 1}")
        chunks = self._chunk[idx]
        for k in np.unique(chunks):
            sel = np.flatnonzero(chunks == k)
            out[sel] = self._map(int(k))[self._row[idx[sel]]]
        return out

    @property
    def labels(self) -> np.ndarray:
        """float32 (N, 6) in :data:`ich.labels.LABELS` order; NaN where unlabelled."""
        return self._labels

    @property
    def has_labels(self) -> bool:
        """Whether every slice has labels (a labelled training cache)."""
        return bool(len(self)) and not np.isnan(self._labels).any()

    def neighbours(self, i: int, offsets: tuple[int, ...] | list[int] = (-1, 0, 1)) -> list[int]:
        """Cache indices of the slices at ``offsets`` along the series, clamped at its ends."""
        lo, hi = int(self._series_start[i]), int(self._series_end[i]) - 1
        return [min(max(int(i) + int(o), lo), hi) for o in offsets]

    def series_index(self) -> dict[str, np.ndarray]:
        """series_instance_uid -> cache indices of its slices, in slice order."""
        out: dict[str, np.ndarray] = {}
        uids = self.catalog["series_instance_uid"].astype(str).to_numpy()
        for start in np.unique(self._series_start):
            out[str(uids[start])] = np.arange(start, self._series_end[start])
        return out

    @property
    def errors(self) -> pd.DataFrame:
        """Catalog rows of the files that could not be cached, with their reasons."""
        return self._errors



# --- building ---------------------------------------------------------------------------------


@dataclass
class CacheSummary:
    """What a build did: counts, speed and failures (for the ``ich prepare`` summary)."""

    out: Path
    files: int
    ok: int
    failed: int
    chunks_built: int
    chunks_skipped: int
    chunks_total: int
    seconds: float
    finalized: bool
    failures: dict[str, int] = field(default_factory=dict)
    failure_examples: list[str] = field(default_factory=list)

    @property
    def slices_per_second(self) -> float:
        """Files processed in this run per wall-clock second (skipped chunks excluded)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    processed: int = 0


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
    except Exception:  # unreadable table: rebuild the chunk rather than trust it
        return False
    return done == [str(p) for p in files]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; threads inside would oversubscribe


#: One chunk's work: (chunk number, its files, cache folder, settings, strict).
_Task = tuple[int, list[Path], Path, PreprocessSpec, bool]


def _build_chunk(task: _Task) -> tuple[int, int]:
    """Worker: preprocess one chunk and move its two files into place. Returns (k, n_files)."""
    k, files, root, spec, strict = task
    buffer = chunk_buffer(len(files), spec.size)  # reused from this process's last chunk
    block, rows = preprocess_files(files, spec, chunk=k, strict=strict, out=buffer.images)
    npy, table = chunk_paths(root, k)
    tmp_npy = npy.with_name(f"{npy.name}.{os.getpid()}.tmp")
    buffer.write(tmp_npy, len(block))
    tmp_table = table.with_name(f"{table.name}.{os.getpid()}.tmp")
    write_rows(rows, tmp_table)
    os.replace(tmp_npy, npy)
    os.replace(tmp_table, table)  # last: its presence marks the chunk finished
    return k, len(files)


def _can_fork() -> bool:
    """Whether workers may be forked from this process as it is now.

    Why fork when possible: a forked worker starts in milliseconds, while forkserver/spawn
    workers start an interpreter and import numpy, OpenCV, pydicom and pandas, about 0.6 s of a
    core per build: a third of a 2,000-slice build on 2 cores. Forking copies every lock as it
    is, so it is done only when no other Python thread runs (none can hold one) and torch is not
    loaded (its OpenMP pool does not survive fork). The native pools that numpy (OpenBLAS),
    OpenCV (pthreads) and Arrow (jemalloc) start at import are idle then and have fork handlers.
    """
    return (
        "fork" in mp.get_all_start_methods()
        and threading.active_count() == 1
        and "torch" not in sys.modules
    )


def _fork_pool(workers: int) -> Any:
    """A pool of forked workers whose OpenCV runs on one thread.

    Why set it in this process: ``cv2.setNumThreads`` inside a forked child hangs when the
    parent had already started OpenCV's thread pool, so the setting is made here, inherited by
    the children at fork, and then restored for this process.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns on any fork of a process with native threads; the idle
            # pools of numpy/OpenCV/Arrow are the case _can_fork accepts (see there).
            warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                    DeprecationWarning)
            return mp.get_context("fork").Pool(workers)
    finally:
        cv2.setNumThreads(previous)


def _spawn_context() -> Any:
    """Start method when forking is unsafe: forkserver starts workers from a clean process;
    spawn where it is unavailable."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # Imported once in the server, then shared by every forked worker (saves ~1 s per worker).
    ctx.set_forkserver_preload(["ich.data.preprocess", "ich.data.catalog", "ich.data.cache"])
    return ctx


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
    chunk_size: int = 1024,
    all_files: bool = False,
    force: bool = False,
) -> CacheSummary:
    """Build (or resume) a preprocessing cache from a folder of DICOM files.

    Args:
        dicom_dir: Folder searched recursively for ``*.dcm`` (every file with ``all_files``).
        out: Cache folder (created).
        labels_csv: Kaggle long-format label CSV joined into the catalog.
        spec: Preprocessing settings (default :class:`PreprocessSpec`); a folder built with
            other settings is refused (CacheError).
        workers: Processes (default: all cores); 1 runs in this process.
        shard: ``(i, n)``: build only chunks k with k % n == i (several machines, one folder).
        strict: Stop at the first bad file (CacheError naming it) instead of recording it.
        progress: Show a tqdm bar over files (stderr).
        chunk_size: Files per chunk (fixed for the life of a cache folder).
        all_files: Take every file, not only ``*.dcm`` (DICOM without extension).
        force: Delete a cache built with other settings instead of refusing.

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
    files = list_dicom_files(root, all_files)
    if not files:
        raise CacheError(f"{root}: no {'files' if all_files else '*.dcm files'} found")
    _check_folder(out, spec, chunk_size, force)
    if n_shards == 1:
        _remove_tmp(out)  # leftovers of a killed run; never read
    n_chunks = (len(files) + chunk_size - 1) // chunk_size
    mine = [k for k in range(n_chunks) if k % n_shards == index]
    parts = {k: files[k * chunk_size : (k + 1) * chunk_size] for k in mine}
    todo = [k for k in mine if not _chunk_done(out, k, parts[k])]
    tasks = [(k, parts[k], out, spec, strict) for k in todo]
    n_todo = sum(len(t[1]) for t in tasks)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    # Forked before the progress bar, whose monitor thread would make forking unsafe.
    pool = _fork_pool(workers) if workers > 1 and _can_fork() else None
    bar = tqdm(total=n_todo, unit="slice", disable=not progress, file=sys.stderr, desc="prepare")
    try:
        _run_tasks(tasks, workers, pool, bar)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()  # no-op after a clean finish (the with block closed it)
    finalized = all(chunk_paths(out, k)[1].is_file() for k in range(n_chunks))
    catalog = finalize_cache(out, labels_csv, n_chunks) if finalized else None
    summary = CacheSummary(
        out=out, files=len(files), ok=0, failed=0, chunks_built=len(todo),
        chunks_skipped=len(mine) - len(todo), chunks_total=n_chunks,
        seconds=time.perf_counter() - start, finalized=finalized, processed=n_todo,
    )
    if catalog is not None:
        _fill_counts(summary, catalog)
    return summary


def _fill_counts(summary: CacheSummary, catalog: pd.DataFrame) -> None:
    bad = catalog[catalog["status"] != "ok"]
    summary.ok, summary.failed = len(catalog) - len(bad), len(bad)
    summary.failures = {str(k): int(v) for k, v in bad["error_kind"].value_counts().items()}
    summary.failure_examples = [f"{r.path}: {r.error}" for r in bad.head(5).itertuples()]


def finalize_cache(
    out: str | Path, labels_csv: str | Path | None = None, n_chunks: int | None = None
) -> pd.DataFrame:
    """Merge the chunk tables into ``catalog.parquet`` (ordered, labelled) and write cache.json.

    Runs once every chunk exists; safe to rerun (e.g. with another label CSV).
    """
    out = Path(out)
    manifest = json.loads((out / "build.json").read_text())
    if n_chunks is None:
        n_chunks = len(list((out / "chunks").glob("*.parquet")))
    tables = (pd.read_parquet(chunk_paths(out, k)[1]) for k in range(n_chunks))
    catalog = assemble_catalog(tables, Path(labels_csv) if labels_csv else None)
    write_parquet_atomic(catalog, out / "catalog.parquet")
    ok = int((catalog["status"] == "ok").sum())
    info = {
        "format": CACHE_FORMAT, "spec": manifest["spec"], "spec_key": manifest["spec_key"],
        "chunk_size": manifest["chunk_size"], "chunks": n_chunks,
        "counts": {"files": len(catalog), "ok": ok, "error": len(catalog) - ok},
        "labels_csv": str(labels_csv) if labels_csv else None,
        "has_labels": bool(ok) and bool(catalog.loc[: ok - 1, "any"].notna().all()),
    }
    _remove_tmp(out)
    _write_json_atomic(info, out / "cache.json")
    return catalog


def format_summary(summary: CacheSummary) -> str:
    """The human summary printed by ``ich prepare``: counts, speed, location, failures."""
    s = summary
    lines = [
        f"cache: {s.out}",
        f"chunks: {s.chunks_built} built, {s.chunks_skipped} already done, {s.chunks_total} in all",
        f"processed {s.processed} files in {s.seconds:.1f} s ({s.slices_per_second:.0f} slices/s)",
    ]
    if not s.finalized:
        lines.append("not finalized yet: other shards' chunks are missing; run the remaining "
                     "shards (or the same command without --shard) to finish the catalog")
        return "\n".join(lines)
    lines.append(f"files: {s.files} ({s.ok} ok, {s.failed} failed)")
    if s.failed:
        lines.append("failures by reason:")
        lines += [f"  {kind}: {n}" for kind, n in sorted(s.failures.items(), key=lambda kv: -kv[1])]
        lines.append("first failures:")
        lines += [f"  {example}" for example in s.failure_examples]
        lines.append("(all failures: rows with status 'error' in catalog.parquet)")
    return "\n".join(lines)
