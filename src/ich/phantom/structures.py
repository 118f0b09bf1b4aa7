"""Deep structures of the phantom head: ventricles, fissures and cisterns, skull base.

All functions take head-frame coordinates ``u`` (left-right) and ``v`` (anterior negative) in
mm, the slice height ``t`` (0 skull base .. 1 vertex) and return boolean (H, W) masks; the
caller decides the HU. Sizes are in mm so they scale with any image size, and thin structures
are kept at least about a pixel wide so they survive at 64 px.
"""

from __future__ import annotations

import numpy as np

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
        out |= _ellipse(u, v, 0.0, 24.0, 5.0 * scale, 3.0 * scale)
    return out


def cisterns(u: np.ndarray, v: np.ndarray, t: float, brain_r: np.ndarray, scale: float,
             spacing: float) -> np.ndarray:
    """Interhemispheric and Sylvian fissures and basal cisterns (CSF outside the ventricles)."""
    half = max(0.5 * scale, 0.55 * spacing)
    au = np.abs(u)
    out = np.zeros(u.shape, dtype=bool)
    near_mid = au < half
    if t > 0.62:
        out |= near_mid
    elif t > 0.3:
        out |= near_mid & ((v < -0.45 * brain_r) | (v > 0.55 * brain_r))
    if 0.2 <= t <= 0.34:  # ambient cistern around the midbrain + suprasellar star
        ring = np.hypot(u, v - 8.0)
        out |= (ring > 12.0) & (ring < 12.0 + 1.5 * scale) & (v > 4.0)
        out |= _ellipse(u, v, 0.0, -10.0, 8.0, 4.5)
    if 0.28 <= t <= 0.48:  # Sylvian fissures running antero-laterally, then wavy
        line = v - (-6.0 - 0.45 * (au - 18.0) + 2.0 * np.sin(au / 4.0))
        out |= (np.abs(line) < half * 1.4) & (au > 16.0) & (au < 0.8 * brain_r)
    return out


def skull_base(u: np.ndarray, v: np.ndarray, t: float, brain_r: np.ndarray, spacing: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Bone and air of the skull base inside the cranial outline (below t = 0.3).

    Returns the masks (bone, air): the floor of the anterior fossa closing in from the front,
    the sphenoid sinus and clivus in the midline, and the petrous ridges running
    postero-laterally with mastoid air cells at their ends.
    """
    f = (0.3 - t) / 0.3  # 0 at t = 0.3 .. 1 at the skull base
    au = np.abs(u)
    front = -0.95 * float(np.median(brain_r))
    # Orbital roofs: two domes of bone rising from the front, a crest between them.
    roof = 8.0 + 32.0 * f
    bone = _ellipse(u, v, -22.0, front, 22.0, roof) | _ellipse(u, v, 22.0, front, 22.0, roof)
    bone |= (au < 2.0 + 2.0 * f) & (v < front + 0.6 * roof)
    air = np.zeros(u.shape, dtype=bool)
    if t < 0.24:
        vs = front * 0.35
        sinus = _ellipse(u, v, 0.0, vs, 5.0 + 8.0 * f, 4.0 + 6.0 * f)
        bone |= _ellipse(u, v, 0.0, vs, 8.0 + 8.0 * f, 7.0 + 6.0 * f) & ~sinus
        bone |= _ellipse(u, v, 0.0, -2.0, 5.0, 6.0 * f + 1.0)  # clivus
        air |= sinus
    if 0.06 <= t <= 0.26:
        along = (au - 10.0) * 0.8 + (v - 4.0) * 0.6  # distance along the ridge
        across = -(au - 10.0) * 0.6 + (v - 4.0) * 0.8
        width = np.maximum((1.5 + 5.0 * f) * (0.4 + 0.02 * along), spacing)
        ridge = (np.abs(across) < width) & (along > 0) & (along < 0.85 * brain_r)
        bone |= ridge
        mastoid = _ellipse(au, v, 42.0, 22.0, 6.0, 6.0) & ridge
        air |= mastoid & ((np.round(u / 2.5) + np.round(v / 2.5)) % 2 == 0)
    return bone, air


def grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation by ``steps`` pixels (4-neighbourhood) with array slicing only."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out
