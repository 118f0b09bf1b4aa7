"""Deep structures of the phantom head: ventricles, fissures and cisterns, deep grey nuclei.

All functions take head-frame coordinates ``u`` (left-right) and ``v`` (anterior negative) in
mm, the slice height ``t`` (0 skull base .. 1 vertex) and return boolean (H, W) masks; the
caller decides the HU. Sizes are in mm so they scale with any image size, and thin structures
are kept at least about a pixel wide so they survive at 64 px.
"""

from __future__ import annotations

import numpy as np

from ich.phantom.grid import mask_box

#: v (mm) of the centre of the lateral ventricles: slightly anterior to the head centre.
VENTRICLE_V = -6.0


def _ellipse(u: np.ndarray, v: np.ndarray, uc: float, vc: float, au: float, av: float
             ) -> np.ndarray:
    return ((u - uc) / au) ** 2 + ((v - vc) / av) ** 2 < 1.0


def ventricles(u: np.ndarray, v: np.ndarray, t: float, scale: float, spacing: float
               ) -> np.ndarray:
    """Lateral ventricles (bodies above, frontal/occipital horns below), third and fourth.

    Args:
        scale: Ventricle size factor (> 1: atrophy, as in older patients).
        spacing: Pixel size (mm); the slit-like third ventricle stays at least a pixel wide.
    """
    out = np.zeros(u.shape, dtype=bool)
    au = np.abs(u)
    vc = VENTRICLE_V
    if 0.45 <= t <= 0.66:  # bodies: two crescents either side of the septum
        level = np.sin(np.pi * (t - 0.45) / 0.21) ** 0.5
        half_len = 20.0 + 12.0 * level
        dv = v - vc
        width = (2.5 + 2.5 * scale) * (0.5 + 0.5 * level)
        center = 1.0 + width + 0.012 * dv**2
        out |= ((au - center) / width) ** 2 + (dv / half_len) ** 2 < 1.0
    if 0.36 <= t < 0.47:  # frontal horns (a V open to the front) and occipital horns
        size = 0.7 + 0.3 * np.sin(np.pi * (t - 0.36) / 0.11)
        front = (v - (vc - 12.0)) / (10.0 * size)
        out |= (((au - 4.0 - 2.5 * scale + 4.0 * front) / (2.2 * scale * size)) ** 2
                + front**2) < 1.0
        back = v - (vc + 30.0)
        out |= (((au - 16.0 - 0.25 * back) / (3.0 * scale * size)) ** 2
                + (back / (9.0 * size)) ** 2) < 1.0
    if 0.30 <= t <= 0.45:  # third ventricle: a midline slit
        out |= (au < max(1.0 * scale, 0.6 * spacing)) & (np.abs(v - vc - 4.0) < 9.0)
    if 0.10 <= t <= 0.24:  # fourth ventricle, behind the pons
        out |= _ellipse(u, v, 0.0, 24.0, 4.0 + 1.5 * scale, 2.5 + 1.0 * scale)
    if 0.2 <= t <= 0.36:  # temporal horns: slits in the medial temporal lobes, wide with age
        width = max(0.4 + 1.6 * (scale - 0.8), 0.6 * spacing)
        line = v - (2.0 + 0.9 * (au - 26.0))
        out |= (np.abs(line) < width) & (au > 24.0) & (au < 31.0)
    return out


def deep_grey(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    """Caudate heads, lentiform nuclei and thalami (grey matter islands in the white matter)."""
    au = np.abs(u)
    out = np.zeros(u.shape, dtype=bool)
    if 0.36 <= t <= 0.56:  # caudate heads, lateral to the frontal horns
        out |= _ellipse(au, v, 9.5, VENTRICLE_V - 10.0, 4.0, 7.0)
    if 0.33 <= t <= 0.47:  # lentiform nuclei (putamen + globus pallidus) and thalami
        out |= _ellipse(au, v, 20.0, VENTRICLE_V + 3.0, 5.5, 12.0)
        out |= _ellipse(au, v, 9.0, VENTRICLE_V + 17.0, 7.0, 9.0)
    return out


def fissure_half_width(scale: float) -> float:
    """Half width (mm) of the interhemispheric and Sylvian fissures for a ventricle ``scale``.

    Fissures open with atrophy faster than the ventricles grow: about 1 mm wide in the young, up
    to 4 mm (Sylvian 6) in the most atrophic heads, dark CSF bands beside which a thin falx or a
    normal vessel is easy to mistake for blood.
    """
    return 0.5 * scale + 1.5 * max(scale - 0.75, 0.0)


def _drawn_fissure_half_width(scale: float, spacing: float) -> float:
    """:func:`fissure_half_width`, kept about a pixel wide so the mask survives coarse grids."""
    return max(fissure_half_width(scale), 0.55 * spacing)


def midline_fissure(u: np.ndarray, v: np.ndarray, t: float, brain_r: np.ndarray, scale: float,
                    spacing: float) -> np.ndarray:
    """Interhemispheric fissure: the whole midline near the vertex, its ends lower down."""
    half = _drawn_fissure_half_width(scale, spacing)
    near_mid = np.abs(u) < half
    if t > 0.62:
        return near_mid
    if t > 0.3:
        return near_mid & ((v < -0.45 * brain_r) | (v > 0.55 * brain_r))
    return np.zeros(u.shape, dtype=bool)


def cisterns(u: np.ndarray, v: np.ndarray, t: float, brain_r: np.ndarray, scale: float,
             spacing: float) -> np.ndarray:
    """Sylvian fissures and basal cisterns (CSF outside the ventricles), within 60 mm."""
    out = np.zeros(u.shape, dtype=bool)
    if not 0.2 <= t <= 0.48:
        return out
    half = _drawn_fissure_half_width(scale, spacing)
    au = np.abs(u)
    if 0.2 <= t <= 0.34:  # ambient cistern around the midbrain + suprasellar star
        # The ring (radius < 12 + 1.5 scale around (0, 8)): hypot only inside its square.
        reach = 12.0 + 1.5 * scale + 1.0
        near = np.flatnonzero((au < reach) & (np.abs(v - 8.0) < reach))
        nu, nv = u.ravel()[near], v.ravel()[near]
        ring = np.hypot(nu, nv - 8.0)
        out.reshape(-1)[near[(ring > 12.0) & (ring < 12.0 + 1.5 * scale) & (nv > 4.0)]] = True
        out |= _ellipse(u, v, 0.0, -10.0, 8.0, 4.5)
    if 0.28 <= t <= 0.48:  # Sylvian fissures running antero-laterally, then wavy
        line = v - (-6.0 - 0.45 * (au - 18.0) + 2.0 * np.sin(au / 4.0))
        out |= (np.abs(line) < half * 1.4) & (au > 16.0) & (au < 0.8 * brain_r)
    return out


def grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation by ``steps`` pixels (4-neighbourhood) with array slicing only.

    Only the bounding box of the mask (plus ``steps``) is processed: small masks grow fast.
    """
    box = mask_box(mask, steps)
    if box is None:
        return mask.copy()
    result = np.zeros_like(mask)
    result[box] = _grow_dense(mask[box], steps)
    return result


def _grow_dense(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out
