"""Windowing: stored values -> HU (PS3.3 C.11.1) and the VOI window (C.11.2), exact cases."""

from __future__ import annotations

import numpy as np
import pytest

from ich.dicom.windowing import apply_window, stack_windows, to_hu


def test_apply_window_maps_edges_and_saturates() -> None:
    out = apply_window(np.array([0.0, 40.0, 80.0, -1000.0, 3000.0]), 40, 80)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 0.0, 1.0])
    assert out.dtype == np.float32


def test_stack_windows_shape_and_order() -> None:
    hu = np.full((4, 5), 80.0, dtype=np.float32)
    out = stack_windows(hu, ["brain", "subdural"])
    assert out.shape == (2, 4, 5)
    np.testing.assert_allclose(out[0], 1.0)  # 80 is the top of the brain window
    np.testing.assert_allclose(out[1], 0.5)  # and the middle of the subdural window


def test_to_hu_wrap_fix() -> None:
    stored = np.array([[3096, 40]], dtype=np.uint16)  # air and brain with the 12-bit fault
    hu, fixed = to_hu(stored, 1.0, 0.0, bits_stored=12, pixel_representation=0)
    assert fixed
    np.testing.assert_allclose(hu, [[-1000.0, 40.0]])


def test_apply_window_is_linear_exact_not_linear() -> None:
    """The docstring names C.11.2.1.3.2 LINEAR_EXACT: check its formula, and that it is not
    C.11.2.1.2.1 LINEAR (which would put 40 HU at 0.5 + 0.5/79 for brain 40/80)."""
    c, w = 40.0, 80.0
    x = np.linspace(-10.0, 90.0, 101)
    exact = np.clip((x - (c - w / 2)) / w, 0, 1)
    linear = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    out = apply_window(x, c, w)
    np.testing.assert_allclose(out, exact, atol=1e-6)
    assert np.abs(out - linear).max() > 1e-3


def test_apply_window_refuses_non_positive_width() -> None:
    with pytest.raises(ValueError, match="width"):
        apply_window(np.zeros(3), 40.0, 0.0)
