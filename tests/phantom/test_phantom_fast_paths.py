"""The phantom's fast paths give exactly what the straightforward code gives.

The direct DICOM encoder must write the bytes pydicom writes for ``build_dataset``; the
restricted computations (muscle ring, lesion bands, rolled noise, HU encoding) must equal their
full-frame formulas, bit for bit, so that a seed keeps producing the same cohort.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ich.phantom.anatomy import _muscles, deep_box, make_grid, render_anatomy, sample_anatomy
from ich.phantom.dicom_writer import (
    HU_RANGE,
    SliceHeader,
    Storage,
    build_dataset,
    encode_hu,
    encode_slice,
    write_slice,
    write_slice_pydicom,
)
from ich.phantom.grid import Anatomy, StudyGrid
from ich.phantom.lesions import Lesion, _wrap
from ich.phantom.memory import _mallopt, hold_freed_memory, keep_freed_memory
from ich.phantom.structures import deep_grey, ventricles
from ich.phantom.study import _add_rolled

STORAGES: tuple[Storage, ...] = ("int16", "uint12", "uint12_wrap")


def _header(storage: Storage, explicit: bool, multi: bool, k: int) -> SliceHeader:
    rng = np.random.default_rng(k)
    return SliceHeader(
        # odd and even lengths: UI pads with NUL, the other strings with a space
        sop_instance_uid="ID_0123456ab" if k % 2 else "ID_0123456a",
        patient_id="ID_0123456" if k % 2 else "ID_01234567",
        study_instance_uid="ID_0123456789", series_instance_uid="ID_abcdef012",
        instance_number=int(rng.integers(1, 300)),
        image_position_patient=(-125.5, float(rng.uniform(-300, 300)), float(rng.uniform(0, 2e3))),
        image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 0.906308, -0.422618),
        pixel_spacing=float(rng.uniform(0.3, 1.0)), slice_thickness=0.625, storage=storage,
        explicit_vr=explicit, multi_valued_window=multi,
    )


@pytest.mark.parametrize("storage", STORAGES)
def test_direct_encoder_writes_the_bytes_pydicom_writes(tmp_path: Path, storage: Storage
                                                        ) -> None:
    rng = np.random.default_rng(1)
    for k, (explicit, multi) in enumerate(itertools.product([True, False], repeat=2)):
        hu = rng.uniform(-3500, 3500, size=(24, 40)).astype(np.float32)
        header = _header(storage, explicit, multi, k)
        fast = write_slice(tmp_path / "fast.dcm", hu, header).read_bytes()
        slow = write_slice_pydicom(tmp_path / "slow.dcm", hu, header).read_bytes()
        assert fast == slow, (storage, explicit, multi)
        assert encode_slice(hu, header) == fast
        back = pydicom.dcmread(tmp_path / "fast.dcm")
        ref = build_dataset(hu, header)
        assert back.file_meta.TransferSyntaxUID == ref.file_meta.TransferSyntaxUID
        assert [e.tag for e in back] == [e.tag for e in ref]
        assert all(back[e.tag].value == e.value for e in ref)


def test_dcmtk_reads_the_direct_encoding(tmp_path: Path) -> None:
    dcmdump = shutil.which("dcmdump", path="/usr/local/bin:/usr/bin:/bin")
    if dcmdump is None:
        pytest.skip("dcmdump not installed (apt-get install dcmtk)")
    hu = np.zeros((16, 16), np.float32)
    for explicit in (True, False):
        path = write_slice(tmp_path / f"ID_{int(explicit)}.dcm", hu,
                           _header("uint12", explicit, not explicit, 3))
        out = subprocess.run([dcmdump, "-dc", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "(7fe0,0010)" in out.stdout and "RescaleIntercept" in out.stdout


@pytest.mark.parametrize("storage", STORAGES)
def test_hu_encoding_matches_integer_arithmetic(storage: Storage) -> None:
    rng = np.random.default_rng(2)
    hu = rng.uniform(-6000, 6000, size=(64, 64)).astype(np.float32)
    hu[0, :6] = [-0.5, 0.5, 1.5, -1.5, 2047.5, -1024.5]  # ties round to even
    low, high = HU_RANGE[storage]
    values = np.clip(np.rint(hu), low, high).astype(np.int32)
    expected = np.mod(values, 4096) if storage == "uint12_wrap" else values + 1024
    stored, _ = encode_hu(hu, storage)
    assert stored.dtype == np.dtype("<i2" if storage == "int16" else "<u2")
    assert np.array_equal(stored.astype(np.int32), expected)


@pytest.mark.parametrize("shift", [(0, 0), (5, 0), (0, 7), (13, 29), (-3, 40)])
@pytest.mark.parametrize("negate", [False, True])
def test_rolled_noise_is_added_in_place_exactly(shift: tuple[int, int], negate: bool) -> None:
    rng = np.random.default_rng(3)
    field = rng.standard_normal((48, 64), dtype=np.float32)
    hu = rng.uniform(-50, 50, size=(48, 64)).astype(np.float32)
    sign = np.float32(-1.0 if negate else 1.0)
    expected = hu + sign * np.roll(field, shift, axis=(0, 1))
    _add_rolled(hu, field, shift, negate)
    assert np.array_equal(hu, expected)


def _grid_and_anatomy(seed: int, size: int = 128, angle: float = 0.15
                      ) -> tuple[StudyGrid, Anatomy]:
    anat = sample_anatomy(np.random.default_rng(seed))
    return make_grid(size, 250.0 / size, anat, (2.0, -8.0), angle), anat


def test_muscle_ring_equals_the_full_frame_formula() -> None:
    grid, anat = _grid_and_anatomy(4)
    painted = 0
    for t in (-0.1, 0.0, 0.05, 0.12, 0.2, 0.3, 0.44, 0.6):
        scale = 0.9
        depth = grid.outline * np.float32(scale) - grid.rho
        hu = np.full(grid.u.shape, -1000.0, dtype=np.float32)
        _muscles(grid, anat, depth, t, hu)
        ref = np.full(grid.u.shape, -1000.0, dtype=np.float32)
        side = float(np.clip((0.45 - t) / 0.3, 0.0, 1.0))
        neck = float(np.clip((0.15 - t) / 0.15, 0.0, 1.0))
        if side or neck:  # the formula as it reads on the whole frame
            rho = np.maximum(grid.rho, 1.0)
            thick = np.float32(2.5 * anat.scalp) * (
                side * (grid.u / rho) ** 2 + neck * np.clip(grid.v / rho, 0.0, 1.0) ** 2)
            ref[(depth < -0.5) & (depth > -thick)] = 55.0
            ref[(depth <= -thick) & (depth > -thick - 1.5) & (thick > 1.0)] = 40.0
        assert np.array_equal(hu, ref), t
        painted += int((hu > -1000).sum())
    assert painted > 0


def test_lesion_masks_equal_their_full_frame_formulas() -> None:
    grid, anat = _grid_and_anatomy(5)
    sa = render_anatomy(grid, anat, 0.45)
    checked = 0
    for subtype, theta0, half in [("subdural", 0.4, 1.0), ("epidural", 3.0, 0.4),
                                  ("subarachnoid", -1.0, 0.9), ("subarachnoid", 0.0, 0.0)]:
        lesion = Lesion(subtype, 70.0, 30.0, theta0, half, 9.0, 70.0)
        for z in (45.0, 60.0, 70.0, 95.0):
            dz = (z - lesion.z0) / lesion.half_z
            got = lesion.mask(grid, sa, z)
            assert got is not None
            if subtype == "subarachnoid":
                central = grid.rho < 0.45 * sa.brain_radius
                near = np.abs(_wrap(grid.theta - theta0)) < half if half else False
                ref = sa.sulcal_csf & (near | central)
            else:
                du = np.abs(_wrap(grid.theta - theta0)) / half
                if subtype == "epidural":
                    thick = 9.0 * np.sqrt(np.clip(1.0 - du**2 - dz**2, 0.0, None))
                else:
                    thick = 9.0 * np.clip(1.0 - du**4 - dz**4, 0.0, None) ** 0.5
                thick = np.where(thick > 0, np.maximum(thick, 1.2 * grid.spacing), 0.0)
                ref = sa.brain & (sa.depth_in < thick)
            assert np.array_equal(got, ref), (subtype, z)
            checked += int(ref.sum())
    assert checked > 0


@pytest.mark.parametrize("size", [64, 256])
def test_deep_structures_never_leave_their_box(size: int) -> None:
    grid, _ = _grid_and_anatomy(6, size, angle=0.0)  # unrotated: the tightest box
    drawn = 0
    for scale, shift in itertools.product((0.7, 1.0, 1.6, 2.2), (0.0, -6.0, 11.0)):
        cu = grid.u - np.float32(shift) * np.exp(-((grid.v / 45.0) ** 2))
        outside = np.ones(grid.u.shape, dtype=bool)
        outside[deep_box(grid, scale, shift)] = False
        for t in np.linspace(0.05, 0.7, 27):
            full = ventricles(cu, grid.v, float(t), scale, grid.spacing)
            full |= deep_grey(cu, grid.v, float(t))
            assert not (full & outside).any(), (scale, shift, t)
            drawn += int(full.sum())
    assert drawn > 0


def test_freed_memory_setting_is_scoped() -> None:
    with pytest.raises(RuntimeError), keep_freed_memory():
        raise RuntimeError("the block fails; the default comes back all the same")
    applied = hold_freed_memory(128 * 1024)  # glibc's default: harmless to set here
    assert applied == (_mallopt() is not None)  # applies wherever glibc's mallopt exists
