"""Normal structures of the independent phantom (see ``alt_phantom.py``): closed-form shape
fields (metaballs, segments, air cells, the dome profile) and the skull base, posterior fossa
and calcifications drawn with them. Millimetres in the head frame; ``t`` = height fraction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from alt_anatomy import Patient

Arr = np.ndarray


def dome(t: float) -> float:
    """In-plane scale of the head at height fraction ``t`` (widest just above the ears)."""
    return float(np.sqrt(max(0.02, 1 - ((t - 0.38) / 0.66) ** 2)))


def ball(x: Arr, y: Arr, cx: float, cy: float, sigma: float) -> Arr:
    """A Gaussian metaball of width ``sigma`` (mm) centred at (cx, cy)."""
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))


def zw(t: float, tc: float, tw: float) -> float:
    """Weight of a structure centred at height ``tc`` with half-width ``tw`` (fractions)."""
    return float(np.exp(-(((t - tc) / tw) ** 2)))


def segment(x: Arr, y: Arr, p0: tuple[float, float], p1: tuple[float, float]) -> Arr:
    """Distance (mm) from each pixel to the segment p0-p1."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    u = np.clip(((x - p0[0]) * vx + (y - p0[1]) * vy) / (vx * vx + vy * vy), 0, 1)
    return np.hypot(x - p0[0] - u * vx, y - p0[1] - u * vy)


def air_cells(x: Arr, y: Arr, period: float) -> Arr:
    """Air cells with thin bone septa: True where air."""
    u = x * np.pi / period + 0.9 * np.sin(y * 0.37)
    v = y * np.pi / period + 0.9 * np.sin(x * 0.41)
    return (np.abs(np.sin(u)) > 0.22) & (np.abs(np.sin(v)) > 0.22)


def angle_diff(theta: Arr, theta0: float) -> Arr:
    return np.abs(np.angle(np.exp(1j * (theta - theta0))))


def posterior_fossa(p: Patient, out: Arr, brain: Arr, x: Arr, y: Arr, t: float) -> None:
    """Cerebellum with folia, brainstem, tentorium below the supratentorial brain."""
    if t > 0.33:
        return
    y_tent = 10 + 0.45 * np.abs(x) - 120 * max(0.0, 0.27 - t)
    if t < 0.27:
        pf = brain & (y > y_tent)
        folia = np.abs(np.sin(0.9 * np.hypot(x, y - p.b * 0.4))) < 0.1 + 0.15 * p.atrophy
        out[pf] = p.hu["gm"] - 2
        out[pf & folia] = p.hu["wm"] - 4
    stem = (zw(t, 0.29, 0.05) * ball(x, y, 0, 2, 11) + zw(t, 0.18, 0.06) * ball(x, y, 0, -2, 13)
            + zw(t, 0.07, 0.05) * ball(x, y, 0, 2, 9))
    out[brain & (stem > 0.5)] = p.hu["stem"]
    fourth = brain & (zw(t, 0.15, 0.05) * ball(x, y, 0, 12 + 0.1 * p.b, 4) > 0.45)
    out[fourth] = p.hu["csf"]
    if 0.2 < t < 0.3:
        w = np.exp(-(((y - y_tent) / 0.9) ** 2)) * brain
        out[:] = out * (1 - w) + p.hu["falx"] * w


def skull_base(p: Patient, out: Arr, face: Arr, cranial: Arr, x: Arr, y: Arr, t: float,
               dome: float, y_floor: Arr) -> None:
    """Orbits, ethmoid/sphenoid air, petrous bone, mastoid cells, clivus, sella, basilar
    (``y_floor``: the bony floor between the face and the cranial fossae)."""
    if t > 0.26:
        return
    out[face] = p.hu["scalp"] + 5
    gy = -0.72 * p.b * dome
    for sx in (-1, 1):
        if 0.05 < t < 0.21:
            rg = 11 * np.sqrt(max(0.0, 1 - ((t - 0.13) / 0.08) ** 2))
            globe = face & (ball(x, y, sx * 30, gy, rg / 1.18) > 0.5)
            fat = face & (segment(x, y, (sx * 30, gy + 4), (sx * 12, gy + 34)) < 9) & ~globe
            out[fat] = -100
            out[globe] = 10
            if 0.11 < t < 0.15:
                out[face & ((x - sx * 30) ** 2 / 16 + (y - gy + rg - 2) ** 2 / 3 < 1)] = 110
        if 0.1 < t < 0.24:
            petrous = cranial & (segment(x, y, (sx * 55, 20), (sx * 14, -6)) < 5)
            out[petrous] = 1500
        if 0.08 < t < 0.2:
            mastoid = cranial & (ball(x, y, sx * 52, 28, 9) > 0.5)
            out[mastoid] = np.where(air_cells(x, y, 3.5), -900, 600)[mastoid]
    ethmoid = face & (np.abs(x) < 12) & (y < -30)
    out[ethmoid] = np.where(air_cells(x, y, 4.0), -950, 700)[ethmoid]
    if t < 0.14:
        sph = cranial & (np.abs(x) < 16) & (y > -30) & (y < -12)
        out[sph] = np.where(air_cells(x, y, 6.0), -950, 800)[sph]
    if t < 0.2:
        out[cranial & (np.abs(x) < 7) & (y > -18 + 40 * (0.2 - t)) & (y < -6)] = 1300
        out[~face & cranial & (np.abs(y - y_floor) < 2.5)] = 900
    if 0.2 < t < 0.24:
        out[cranial & (np.abs(np.hypot(x, y + 16) - 6) < 1.2) & (y > -16)] = 800
    if 0.12 < t < 0.26:
        out[cranial & (ball(x, y, 0, -9, 1.6) > 0.5)] = 45


def calcifications(p: Patient, out: Arr, brain: Arr, xm: Arr, y: Arr, t: float) -> None:
    """Pineal, choroid plexus, pallidal and falx calcifications (normal, never labelled)."""
    cal = p.calc
    if cal["pineal"] and abs(t - 0.38) < 0.03:
        out[brain & (ball(xm, y, 0, 12, 2.5) > 0.5)] = cal["pineal"]
    for sx in (-1, 1):
        if cal["choroid"] and abs(t - 0.46) < 0.035:
            out[brain & (ball(xm, y, sx * 18, 24, 2.2) > 0.5)] = cal["choroid"]
        if cal["pallidal"] and abs(t - 0.41) < 0.03:
            out[brain & (ball(xm, y, sx * 17, -3, 2.0) > 0.5)] = cal["pallidal"]
    for py, tc, rad, val in cal["falx"]:
        if abs(t - tc) < rad / p.height:
            out[brain & (ball(xm, y, 0, py, rad / 1.18) > 0.5)] = val
