"""Pure numpy: stored values -> Hounsfield units -> display windows.

The two grey-scale steps of DICOM's display pipeline, in PS3.3's terms: the Modality LUT
transform (C.11.1: stored values -> HU by Rescale Slope/Intercept) and the VOI LUT transform
(C.11.2: a window of HU -> [0, 1]). Nothing here touches pydicom; callers pass the header values
they read (see ``ich.dicom.io``). Finding and cropping the head lives in ``ich.dicom.headcrop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A display window in Hounsfield units ((0028,1050) Window Center / (0028,1051) Width)."""

    name: str
    center: float
    width: float


#: The windows used in head CT, by name (center/width in HU, as in DESIGN.md).
WINDOWS: dict[str, Window] = {
    "brain": Window("brain", 40.0, 80.0),
    "subdural": Window("subdural", 80.0, 200.0),
    "soft_tissue": Window("soft_tissue", 40.0, 380.0),
    "bone": Window("bone", 600.0, 2800.0),
}
#: The usual 3-channel input: brain / subdural / soft tissue.
DEFAULT_WINDOWS: tuple[str, ...] = ("brain", "subdural", "soft_tissue")


def needs_wrap_fix(bits_stored: int, pixel_representation: int, rescale_intercept: float) -> bool:
    """Whether a slice has the RSNA 12-bit wrap fault.

    Some RSNA files store 12-bit unsigned values with an intercept above -100: their air reads
    as bright. The values must be shifted by 1000, wrapped at 4096, and read with intercept -1000.
    """
    return bits_stored == 12 and pixel_representation == 0 and rescale_intercept > -100


def to_hu(
    stored: np.ndarray,
    rescale_slope: float,
    rescale_intercept: float,
    bits_stored: int = 16,
    pixel_representation: int = 1,
) -> tuple[np.ndarray, bool]:
    """Convert stored pixel values to float32 Hounsfield units (PS3.3 C.11.1).

    Args:
        stored: Stored values, any integer or float dtype, shape (rows, columns).
        rescale_slope: (0028,1053) Rescale Slope.
        rescale_intercept: (0028,1052) Rescale Intercept.
        bits_stored: (0028,0101) Bits Stored.
        pixel_representation: (0028,0103) Pixel Representation (0 unsigned, 1 signed).

    Returns:
        The HU image (float32) and whether the 12-bit wrap fix was applied.
    """
    values = stored.astype(np.float32)
    fixed = needs_wrap_fix(bits_stored, pixel_representation, rescale_intercept)
    if fixed:
        values = np.mod(values + 1000.0, 4096.0)
        rescale_intercept = -1000.0
    hu = values * np.float32(rescale_slope) + np.float32(rescale_intercept)
    return hu.astype(np.float32, copy=False), fixed


def apply_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map HU to [0, 1] with DICOM's LINEAR_EXACT VOI LUT function; outside values saturate.

    The function is PS3.3 C.11.2.1.3.2 (VOI LUT Function ``LINEAR_EXACT``) with output range
    [0, 1]: ``y = (x - (c - w/2)) / w``, clipped to [0, 1]. Why not the default ``LINEAR``
    function of C.11.2.1.2.1, ``y = (x - (c - 0.5)) / (w - 1) + 0.5``: that one is defined for
    integer display levels; on continuous HU the exact form makes a window of width ``w``
    span exactly ``w`` HU, so brain 40/80 maps 0..80 HU onto 0..1. (The two differ by less
    than 1/w of the range; every model ich trains was trained with this one.)

    Works on any shape and on float or integer input; always returns float32.

    Raises:
        ValueError: if ``width`` is not positive (C.11.2.1.3.2 requires w > 0).
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(width)
    return np.clip(out, 0.0, 1.0, out=out)


def resolve_windows(names_or_windows: Sequence[str | Window]) -> tuple[Window, ...]:
    """Turn window names (``"brain"``) or ``"C,W"`` strings into :class:`Window` objects."""
    out: list[Window] = []
    for item in names_or_windows:
        if isinstance(item, Window):
            out.append(item)
        elif item in WINDOWS:
            out.append(WINDOWS[item])
        else:
            try:
                center, width = (float(v) for v in str(item).split(","))
            except ValueError:
                known = ", ".join(WINDOWS)
                raise ValueError(f"unknown window {item!r}: use one of {known} or 'C,W'") from None
            out.append(Window(f"{center:g},{width:g}", center, width))
    return tuple(out)


def stack_windows(hu: np.ndarray, windows: Sequence[str | Window] = DEFAULT_WINDOWS) -> np.ndarray:
    """Window one HU image several ways: (H, W) -> float32 (C, H, W) in [0, 1]."""
    return np.stack([apply_window(hu, w.center, w.width) for w in resolve_windows(windows)])
