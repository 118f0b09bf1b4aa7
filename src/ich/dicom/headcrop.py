"""Head mask, square head crop and resize: the geometry shared by the cache and inference.

Why a module of its own: windowing maps HU to display values (a DICOM VOI transform), while
this finds the head and cuts it out; they change for different reasons. OpenCV (connected
components, morphology, area resize) keeps it fast enough for ``ich prepare``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

#: Tissue threshold (HU): above fat/air, below every soft tissue of the head.
HEAD_THRESHOLD_HU = -300.0
#: Air, used to pad crops that extend beyond the image.
AIR_HU = -1000.0
#: The mask is computed on an image about this many pixels on its short side (speed).
_MASK_SIDE = 128


def _mask_factor(shape: tuple[int, ...]) -> int:
    """Integer downsampling factor that brings the short side near :data:`_MASK_SIDE`."""
    return max(1, min(shape[0], shape[1]) // _MASK_SIDE)


def _largest_label(
    binary: np.ndarray,
) -> tuple[np.ndarray, int, tuple[int, int, int, int]] | None:
    """(labels, label, (left, top, width, height)) of the largest 8-connected component.

    None when the image is empty. Why not ``connectedComponentsWithStats``: its statistics
    cost three times the labelling on a 128-pixel mask, and the head mask usually has one
    component (then its box is the mask's); otherwise areas come from one ``bincount``.
    """
    # 16-bit labels: enough for a ~128-pixel image (<= 2**15 components), and faster.
    ltype = cv2.CV_16U if binary.size < 2**16 else cv2.CV_32S
    n, labels = cv2.connectedComponents(binary, connectivity=8, ltype=ltype)
    if n <= 1:
        return None
    if n == 2:  # a single component: every foreground pixel
        best, pixels = 1, binary
    else:
        best = 1 + int(np.argmax(np.bincount(labels.ravel(), minlength=n)[1:]))
        pixels = np.equal(labels, best).view(np.uint8)
    x, y, w, h = cv2.boundingRect(pixels)
    return np.asarray(labels), best, (int(x), int(y), int(w), int(h))


def _largest_component(binary: np.ndarray) -> np.ndarray:
    """Largest 8-connected component of a uint8 {0,1} image, holes filled, as uint8 {0,1}."""
    found = _largest_label(binary)
    if found is None:
        return np.zeros_like(binary)
    labels, best, _ = found
    component = np.equal(labels, best).view(np.uint8)  # bool as {0,1} bytes, no copy
    # Filling the outer contour fills every hole (ventricles, sinuses) in one call.
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _tissue(
    hu: np.ndarray, factor: int, rescale: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue (uint8 {0,1}) on every ``factor``-th pixel, and the same after an opening.

    Plain subsampling (not averaging) is enough: the mask only separates tissue from air at
    -300 HU, far from both, and it costs nothing compared with a resize. With ``rescale``
    (slope, intercept) the image holds stored values: the sampled integers are compared with
    the threshold in stored units when that is exact (:func:`integer_rescale`), otherwise
    turned into HU with the float32 operations of :func:`to_hu`; either way the mask is the one
    of the HU image.
    """
    img = np.asarray(hu)[::factor, ::factor]
    threshold: float | int = HEAD_THRESHOLD_HU
    if rescale is not None and integer_rescale(img.dtype, *rescale):
        # HU = stored + intercept exactly (float32 holds these integers): compare the stored
        # integers with -300 - intercept instead of converting the sample to HU.
        threshold = int(HEAD_THRESHOLD_HU) - int(rescale[1])
    elif rescale is not None:  # in place: the same float32 operations, one temporary fewer
        img = img.astype(np.float32)
        img *= np.float32(rescale[0])
        img += np.float32(rescale[1])
    # A bool array viewed as uint8 is already {0,1}: no conversion pass needed.
    binary = np.greater(img, threshold).view(np.uint8)
    # An opening a few percent of the image wide cuts the thin headrest/table (and cables)
    # from the head, so that the largest component is the head alone.
    k = max(3, round(0.04 * min(binary.shape)) | 1)
    return binary, cv2.morphologyEx(binary, cv2.MORPH_OPEN, _ellipse(k))


def integer_rescale(dtype: np.dtype, slope: float, intercept: float) -> bool:
    """Whether stored values of ``dtype`` become HU by adding an integer, exactly in float32."""
    return (
        dtype.kind in "iu" and dtype.itemsize <= 2 and slope == 1.0
        and float(intercept).is_integer() and abs(intercept) < 2**23
    )


@functools.lru_cache(maxsize=16)
def _ellipse(k: int) -> np.ndarray:
    """The k × k elliptic kernel, built once per size (it is the same for every slice)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    kernel.flags.writeable = False  # shared between calls
    return kernel


def _small_head_mask(hu: np.ndarray, factor: int) -> np.ndarray:
    """Head mask (uint8 {0,1}) on every ``factor``-th pixel of the image (see :func:`_tissue`)."""
    binary, opened = _tissue(hu, factor)
    mask = _largest_component(opened)
    if not mask.any():  # the object is thinner than the opening: keep it rather than lose it
        mask = _largest_component(binary)
    return mask


def head_mask(hu: np.ndarray) -> np.ndarray:
    """The head: largest connected tissue component, without headrest, table and border.

    Computed on a ~128-pixel subsampled image (the mask only drives a crop, so full resolution
    buys nothing but time) and scaled back to the input size.

    Args:
        hu: HU image (H, W).

    Returns:
        bool (H, W); all False when nothing is above -300 HU.
    """
    hu = np.asarray(hu)
    factor = _mask_factor(hu.shape)
    small = _small_head_mask(hu, factor)
    if factor > 1:  # each sampled pixel stands for a factor x factor block
        small = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
    return small[: hu.shape[0], : hu.shape[1]].astype(bool)


def _square_box(
    y0: float, y1: float, x0: float, x1: float, margin_frac: float
) -> tuple[int, int, int, int]:
    """Square integer box (end exclusive) centred on a box, its side padded by ``margin_frac``."""
    side = max(y1 - y0, x1 - x0) * (1.0 + 2.0 * margin_frac)
    side_i = max(1, round(side))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    top = round(cy - side_i / 2.0)
    left = round(cx - side_i / 2.0)
    return top, top + side_i, left, left + side_i


def head_bbox(
    hu: np.ndarray, margin_frac: float = 0.05, rescale: tuple[float, float] | None = None
) -> tuple[int, int, int, int]:
    """Square crop box around the head: ``(y0, y1, x0, x1)``, ends exclusive.

    The box is square so that resizing keeps the aspect ratio, and may extend beyond the image
    (:func:`crop_resize` pads with air). With no head found the box covers the whole image.

    Args:
        hu: HU image (H, W).
        margin_frac: Padding on each side, as a fraction of the head's larger extent.
        rescale: (slope, intercept) when ``hu`` holds stored values rather than HU.
    """
    hu = np.asarray(hu)
    height, width = hu.shape[:2]
    factor = _mask_factor(hu.shape)
    binary, opened = _tissue(hu, factor, rescale)
    # The bounding box of the filled head is the one of its component (holes are inside it),
    # read from the component statistics: no filling needed here.
    found = _largest_label(opened) or _largest_label(binary)  # thinner than the opening
    if found is None:
        return _square_box(0, height, 0, width, 0.0)
    x, y, w, h = found[2]
    return _square_box(y * factor, (y + h) * factor, x * factor, (x + w) * factor, margin_frac)


def crop_resize(hu: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box`` (parts outside the image read as air, -1000 HU) and resize to size × size.

    Shrinking averages (no aliasing of thin bright structures such as blood along the falx);
    enlarging uses bilinear interpolation (see :func:`_interpolation` for the exact rule).

    Returns:
        float32 (size, size).
    """
    return crop_resize_any(np.asarray(hu, dtype=np.float32), box, size, AIR_HU)


#: dtypes OpenCV resizes as they are; anything else is resized as float32.
_CV_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.float32))


def crop_resize_any(
    img: np.ndarray, box: tuple[int, int, int, int], size: int, fill: float
) -> np.ndarray:
    """:func:`crop_resize` for any image: pads with ``fill`` and keeps an OpenCV dtype.

    Why: the cache resizes stored integers (uint16/int16) without making a float copy of the
    whole slice; integer results are rounded to the nearest value by OpenCV. Only the crop is
    converted to float32 when the dtype is not one OpenCV resizes (e.g. int8, int32).

    Returns:
        (size, size) of ``img``'s dtype (float32 for other dtypes).
    """
    img = np.asarray(img)
    height, width = img.shape[:2]
    y0, y1, x0, x1 = (int(v) for v in box)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"empty crop box {box}")
    inner = img[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if inner.dtype not in _CV_DTYPES:
        inner = inner.astype(np.float32)
    pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    crop: np.ndarray
    if inner.size == 0:
        crop = np.full((y1 - y0, x1 - x0), fill, dtype=inner.dtype)
    elif any(pads):
        crop = cv2.copyMakeBorder(inner, *pads, cv2.BORDER_CONSTANT, value=fill)
    else:
        crop = inner
    if crop.shape == (size, size):
        return np.array(crop)
    return cv2.resize(crop, (size, size), interpolation=_interpolation(crop.shape[0], size))


def _interpolation(side: int, size: int) -> int:
    """OpenCV interpolation for resizing a square of ``side`` pixels to ``size``.

    Enlarging: bilinear. Shrinking: area averaging, except for factors between 1 and 2 that are
    not whole numbers, where bilinear is used: it still reads every input pixel at such factors,
    differs from area averaging by ~1 HU on brain tissue (real RSNA slice, 430 -> 256 px), and is
    ~8x faster (OpenCV's area resize is slow for fractional factors). This is the common case of a
    head crop (~400-480 px) resized to 256, so it sets the speed of ``ich prepare``.
    """
    if side <= size:
        return cv2.INTER_LINEAR
    factor = side / size
    if factor < 2.0 and not factor.is_integer():
        return cv2.INTER_LINEAR
    return cv2.INTER_AREA
