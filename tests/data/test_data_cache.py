"""build_cache / SliceCache: tiny phantom cohort, broken files, resume, shards, real sample."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ich.data import workers as workers_module
from ich.data.build import build_cache
from ich.data.cache import SliceCache, chunk_paths
from ich.data.preprocess import PreprocessSpec, preprocess_hu
from ich.dicom.io import read_slice
from ich.errors import CacheError
from ich.labels import LABELS, read_labels

SPEC = PreprocessSpec(size=64)
CHUNK = 48


def _build(src: Path, out: Path, **kw: object) -> object:
    opts: dict[str, object] = {"spec": SPEC, "workers": 1, "progress": False, "chunk_size": CHUNK}
    opts.update(kw)
    return build_cache(src, out, **opts)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def built(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "c"
    _build(tiny_cohort / "images", out, labels_csv=tiny_cohort / "labels.csv")
    return out


@pytest.fixture()
def images_copy(tiny_cohort: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "images"
    shutil.copytree(tiny_cohort / "images", dst)
    return dst


def test_rows_and_labels(built: Path, tiny_cohort: Path) -> None:
    cache = SliceCache(built)
    n_files = len(list((tiny_cohort / "images").glob("*.dcm")))
    assert len(cache) == len(cache.catalog) == n_files and cache.errors.empty
    assert cache.size == 64 and cache.spec == SPEC and cache.has_labels
    wide = read_labels(tiny_cohort / "labels.csv")
    expected = wide.loc[cache.catalog["image_id"], list(LABELS)].to_numpy(np.float32)
    np.testing.assert_array_equal(cache.labels, expected)
    assert cache.labels.dtype == np.float32 and cache.labels.shape == (n_files, 6)


def test_order_follows_z(built: Path, tiny_cohort: Path) -> None:
    cat = SliceCache(built).catalog
    for _, series in cat.groupby("series_instance_uid", sort=False):
        assert series["slice_index"].tolist() == list(range(len(series)))
        assert (np.diff(series["z"].to_numpy()) > 0).all()
        assert (series["n_slices"] == len(series)).all()
    truth = pd.read_csv(tiny_cohort / "patients.csv").set_index("image_id")
    np.testing.assert_array_equal(
        cat["slice_index"].to_numpy(), truth.loc[cat["image_id"], "slice_index"].to_numpy()
    )


def test_images_equal_preprocess(built: Path) -> None:
    cache = SliceCache(built)
    idx = np.array([0, len(cache) // 2, len(cache) - 1, 5])
    stack = cache.images(idx)
    assert stack.dtype == np.int16 and stack.shape == (4, 64, 64)
    for j, i in enumerate(idx):
        # The cache resizes stored integers (preprocess_stored), preprocess_hu float32 HU:
        # equal within the documented 1 HU of rounding, and exactly on nearly every pixel.
        expected = preprocess_hu(read_slice(cache.catalog.loc[i, "path"]).hu, SPEC)
        diff = np.abs(cache.image(int(i)).astype(np.int32) - expected)
        assert diff.max() <= 1 and (diff == 0).mean() > 0.995
        np.testing.assert_array_equal(stack[j], cache.image(int(i)))
    with pytest.raises(IndexError):
        cache.image(len(cache))


def test_neighbours_series_index_and_pickle(built: Path) -> None:
    cache = SliceCache(built)
    groups = cache.series_index()
    first = next(iter(groups.values()))
    assert sum(len(v) for v in groups.values()) == len(cache)
    start, end = int(first[0]), int(first[-1])
    assert cache.neighbours(start) == [start, start, start + 1]  # clamped at the series start
    assert cache.neighbours(end, (-2, 0, 2)) == [end - 2, end, end]
    before = cache.image(3)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._maps == {}  # memmaps are reopened per process, never pickled
    np.testing.assert_array_equal(clone.image(3), before)


def test_bad_files_recorded_and_run_finishes(images_copy: Path, tmp_path: Path) -> None:
    good = sorted(images_copy.glob("*.dcm"))
    (images_copy / "ID_trunc.dcm").write_bytes(good[0].read_bytes()[:-3000])
    (images_copy / "ID_text.dcm").write_text("hello, this is not DICOM\n")
    (images_copy / "ID_empty.dcm").write_bytes(b"")
    summary = _build(images_copy, tmp_path / "c")
    cache = SliceCache(tmp_path / "c")
    errors = cache.errors.set_index("image_id")
    assert set(errors.index) == {"ID_trunc", "ID_text", "ID_empty"}
    assert (errors["error"].str.len() > 0).all() and (errors["status"] == "error").all()
    assert len(cache) == len(good)
    assert summary.failed == 3 and sum(summary.failures.values()) == 3  # type: ignore[attr-defined]
    # The truncated file's header was readable: its identifiers are kept for the user.
    assert errors.loc["ID_trunc", "series_instance_uid"] != ""


def test_strict_raises_naming_the_file(images_copy: Path, tmp_path: Path) -> None:
    (images_copy / "ID_text.dcm").write_text("not DICOM")
    with pytest.raises(CacheError, match=r"ID_text\.dcm"):
        _build(images_copy, tmp_path / "c", strict=True)


def test_resume_rebuilds_only_missing_chunk(built: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    shutil.copytree(built, out)
    n_chunks = len(list((out / "chunks").glob("*.npy")))
    assert n_chunks >= 3
    mtimes = {k: chunk_paths(out, k)[0].stat().st_mtime_ns for k in range(n_chunks)}
    chunk_paths(out, 1)[0].unlink()
    leftover = out / "chunks" / "00002.npy.999.tmp"  # what a killed worker leaves behind
    leftover.write_bytes(b"partial")
    summary = _build(tiny_cohort / "images", out, labels_csv=tiny_cohort / "labels.csv")
    assert summary.chunks_built == 1 and summary.chunks_skipped == n_chunks - 1  # type: ignore[attr-defined]
    for k in range(n_chunks):
        if k != 1:
            assert chunk_paths(out, k)[0].stat().st_mtime_ns == mtimes[k]
    assert not leftover.exists()
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "catalog.parquet"), pd.read_parquet(built / "catalog.parquet")
    )
    np.testing.assert_array_equal(SliceCache(out).images(np.arange(len(SliceCache(out)))),
                                  SliceCache(built).images(np.arange(len(SliceCache(built)))))


def test_shards_equal_single_build(built: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    out, labels = tmp_path / "c", tiny_cohort / "labels.csv"
    first = _build(tiny_cohort / "images", out, labels_csv=labels, shard=(0, 2), workers=2)
    assert not first.finalized and not (out / "catalog.parquet").exists()  # type: ignore[attr-defined]
    second = _build(tiny_cohort / "images", out, labels_csv=labels, shard=(1, 2))
    assert second.finalized  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "catalog.parquet"), pd.read_parquet(built / "catalog.parquet")
    )
    a, b = SliceCache(out), SliceCache(built)
    np.testing.assert_array_equal(a.images(np.arange(len(a))), b.images(np.arange(len(b))))


def test_other_spec_refused_unless_force(built: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    shutil.copytree(built, out)
    with pytest.raises(CacheError, match="--force"):
        _build(tiny_cohort / "images", out, spec=PreprocessSpec(size=32))
    _build(tiny_cohort / "images", out, spec=PreprocessSpec(size=32), force=True)
    cache = SliceCache(out)
    assert cache.size == 32 and cache.image(0).shape == (32, 32) and not cache.has_labels
    assert np.isnan(cache.labels).all()


def test_all_files_takes_files_without_extension(tmp_path: Path, tiny_cohort: Path) -> None:
    src = tmp_path / "raw" / "sub"
    src.mkdir(parents=True)
    for path in sorted((tiny_cohort / "images").glob("*.dcm"))[:5]:
        shutil.copy(path, src / path.stem)
    with pytest.raises(CacheError, match="no"):
        _build(tmp_path / "raw", tmp_path / "c1")
    _build(tmp_path / "raw", tmp_path / "c2", all_files=True)
    assert len(SliceCache(tmp_path / "c2")) == 5


def test_missing_cache_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="ich prepare"):
        SliceCache(tmp_path)


@pytest.mark.real
def test_real_sample_with_labels(rsna_sample: Path, tmp_path: Path) -> None:
    labels = rsna_sample / "stage_2_train.csv"
    _build(rsna_sample / "stage_2_train", tmp_path / "c", labels_csv=labels)
    cache = SliceCache(tmp_path / "c")
    assert len(cache) == 93 and cache.has_labels and cache.errors.empty
    assert len(cache.series_index()) == 3
    wide = read_labels(rsna_sample / "stage_2_train.csv")
    expected = wide.loc[cache.catalog["image_id"], list(LABELS)].to_numpy(np.float32)
    np.testing.assert_array_equal(cache.labels, expected)
    i = int(cache.catalog.index[cache.catalog["bits_stored"] == 12][0])
    expected_img = preprocess_hu(read_slice(cache.catalog.loc[i, "path"]).hu, SPEC)
    np.testing.assert_array_equal(cache.image(i), expected_img)


def test_pool_build_equals_one_process(tiny_cohort: Path, tmp_path: Path) -> None:
    """Chunks built by this process while the pool starts and by the workers agree."""
    one, two = tmp_path / "one", tmp_path / "two"
    _build(tiny_cohort / "images", one, chunk_size=8)
    summary = _build(tiny_cohort / "images", two, chunk_size=8, workers=2)
    assert summary.chunks_built == summary.chunks_total  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(pd.read_parquet(one / "catalog.parquet"),
                                  pd.read_parquet(two / "catalog.parquet"))
    a, b = SliceCache(one), SliceCache(two)
    np.testing.assert_array_equal(a.images(np.arange(len(a))), b.images(np.arange(len(b))))


def test_pool_build_strict_stops(images_copy: Path, tmp_path: Path) -> None:
    (images_copy / "ID_zzbroken.dcm").write_bytes(b"junk")
    with pytest.raises(CacheError, match="ID_zzbroken"):
        _build(images_copy, tmp_path / "c", chunk_size=8, workers=2, strict=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
def test_fork_only_when_no_other_thread_and_no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert workers_module.can_fork()
    monkeypatch.setitem(sys.modules, "torch", object())  # type: ignore[arg-type]
    assert not workers_module.can_fork()
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert not workers_module.can_fork()


_FORKED_BUILD = """
import sys, cv2, numpy as np
from ich.data.build import build_cache
from ich.data.workers import can_fork
from ich.data.preprocess import PreprocessSpec
# Start OpenCV's thread pool here first: a forked worker that resized it used to hang.
cv2.setNumThreads(2)
cv2.resize(np.random.rand(2048, 2048).astype(np.float32), (600, 600), interpolation=cv2.INTER_AREA)
assert can_fork(), "expected the fork path in a fresh interpreter"
summary = build_cache(sys.argv[1], sys.argv[2], spec=PreprocessSpec(size=64), workers=2,
                      progress=False, chunk_size=8)
print(summary.chunks_built, summary.chunks_total, cv2.getNumThreads())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")
@pytest.mark.timeout(120)
def test_forked_workers_build_the_same_cache(tiny_cohort: Path, tmp_path: Path) -> None:
    """The fork path (a fresh interpreter without torch), after OpenCV's pool has started."""
    one, two = tmp_path / "one", tmp_path / "two"
    _build(tiny_cohort / "images", one, chunk_size=8)
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_BUILD, str(tiny_cohort / "images"), str(two)],
        capture_output=True, text=True, timeout=110, check=True,
    )
    built, total, threads = (int(v) for v in done.stdout.split())
    assert built == total > 2 and threads == 2  # this process's OpenCV setting is restored
    pd.testing.assert_frame_equal(pd.read_parquet(one / "catalog.parquet"),
                                  pd.read_parquet(two / "catalog.parquet"))
    a, b = SliceCache(one), SliceCache(two)
    np.testing.assert_array_equal(a.images(np.arange(len(a))), b.images(np.arange(len(b))))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
@pytest.mark.timeout(60)
def test_workers_end_with_their_parent(tmp_path: Path) -> None:
    """A worker of a build killed hard stops at once instead of finishing its chunk."""
    script = """
import os, sys, time
from ich.data.workers import die_with_parent
child = os.fork()
if child == 0:
    die_with_parent()
    print(os.getpid(), flush=True)  # only now: killing the parent earlier is a race
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    end = time.time() + 20
    while time.time() < end and not _ended(worker):
        time.sleep(0.05)
    ended = _ended(worker)
    if not ended:
        os.kill(worker, signal.SIGKILL)  # leave no sleeper behind
    assert ended


def _ended(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it."""
    try:
        return ") Z " in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
