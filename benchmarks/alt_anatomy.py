"""Anatomy, lesions and acquisition of the independent phantom (see ``alt_phantom.py``).

Geometry is in millimetres in a head frame (x to the patient's left, y posterior, z up from the
skull base); ``t = z / height`` runs from the skull base (0) to the vertex (1). Everything is a
closed-form field evaluated per slice: depth below the scalp along the ray from the head
centre, angular phase fields for gyri, metaball sums for ventricles, nuclei and parenchymal
bleeds. Values follow DESIGN.md "Phantom v2" (HU, adult, non-contrast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from alt_lesions import SUBTYPES, draw_lesion, extra_axial, paint_lesions
from alt_shapes import (
    angle_diff,
    ball,
    calcifications,
    dome,
    posterior_fossa,
    segment,
    skull_base,
    zw,
)
from scipy.ndimage import gaussian_filter

Arr = np.ndarray


@dataclass
class Patient:
    """Everything drawn once per study: shape, tissues, scanner, lesions and header choices."""

    size: int
    spacing: float
    x: Arr  # head-frame x of every pixel (mm), (size, size)
    y: Arr
    xi: Arr  # image-frame x, y (mm from the image centre), for the headrest
    yi: Arr
    a: float
    b: float
    power: float
    harmonics: list[tuple[int, float, float]]
    scalp: float
    bone: float
    height: float
    thickness: float
    slice_z: Arr
    atrophy: float
    hu: dict[str, float]
    noise: dict[str, float]
    calc: dict[str, Any]
    lesions: list[dict[str, Any]]
    header: dict[str, Any]
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    motion: set[int] = field(default_factory=set)


def draw_patient(rng: np.random.Generator, size: int, subtypes: list[str], seed: int,
                 index: int) -> Patient:
    """Draw one study: anatomy, tissue values, scanner, header variant and its lesions."""
    from pydicom.uid import generate_uid

    ps512 = rng.uniform(0.4, 0.55)
    spacing = ps512 * 512 / size
    coords = (np.arange(size) - (size - 1) / 2) * spacing
    xi, yi = np.meshgrid(coords, coords)
    rot = np.deg2rad(rng.uniform(-12, 12))
    fov = size * spacing
    b = rng.uniform(86, 98)
    shift = max(0.0, fov / 2 - b - 14)
    cx, cy = rng.uniform(-1, 1, 2) * min(shift, 14)
    dx, dy = xi - cx, yi - cy
    x = (np.cos(rot) * dx + np.sin(rot) * dy).astype(np.float32)
    y = (-np.sin(rot) * dx + np.cos(rot) * dy).astype(np.float32)
    age = rng.uniform(20, 90)
    atrophy = float(np.clip((age - 35) / 55, 0, 1))
    height = rng.uniform(125, 145)
    thickness = float(rng.choice([2.5, 3.0, 4.0, 5.0], p=[0.15, 0.15, 0.2, 0.5]))
    z0 = rng.uniform(-4, 2)
    slice_z = z0 + thickness * np.arange(int((height - 2 - z0) / thickness) + 1)
    harmonics = [(k, rng.uniform(0, 0.025 if k % 2 == 0 else 0.01), rng.uniform(0, 2 * np.pi))
                 for k in (2, 3, 4, 5)]
    hu = {"wm": rng.uniform(23, 29), "gm": rng.uniform(35, 40), "csf": rng.uniform(2, 12),
          "scalp": rng.uniform(25, 45), "table": rng.uniform(1300, 1800),
          "diploe": rng.uniform(450, 850), "sinus": rng.uniform(42, 65),
          "falx": rng.uniform(40, 65), "stem": rng.uniform(29, 34)}
    calc = {
        "pineal": rng.uniform(100, 500) if rng.random() < 0.35 + 0.4 * atrophy else 0.0,
        "choroid": rng.uniform(100, 400) if rng.random() < 0.2 + 0.7 * atrophy else 0.0,
        "pallidal": rng.uniform(80, 300) if rng.random() < 0.05 + 0.2 * atrophy else 0.0,
        "falx": [(rng.uniform(-50, 50), rng.uniform(0.5, 0.9), rng.uniform(1.2, 3),
                  rng.uniform(250, 1000)) for _ in range(rng.integers(1, 4))]
        if rng.random() < 0.45 * atrophy else [],
        "scalp_hematoma": (rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.8), rng.uniform(6, 15),
                           rng.uniform(50, 75)) if rng.random() < 0.15 else None,
    }
    noise = {"sigma": rng.uniform(2.5, 5), "kernel_mm": rng.uniform(0.35, 1.3),
             "poisson": rng.uniform(0.0, 0.6), "cup": rng.uniform(0, 6),
             "rim": rng.uniform(3, 12), "streak": rng.uniform(2, 8)}
    storage = str(rng.choice(["u16-12", "u16-16", "i16"]))
    header = {"storage": storage, "tilt": float(rng.uniform(0, 22)) if rng.random() < 0.6 else 0.0,
              "descending": bool(rng.random() < 0.3), "pad": bool(rng.random() < 0.4),
              "multi_window": bool(rng.random() < 0.5), "fov": fov, "seed": seed,
              "index": index, "cy": float(cy),
              "kernel": "SOFT" if noise["kernel_mm"] > 0.8 else "SHARP"}
    entropy = [f"alt-{seed}-{index}"]
    p = Patient(size=size, spacing=spacing, x=x, y=y, xi=xi.astype(np.float32),
                yi=yi.astype(np.float32), a=rng.uniform(68, 78), b=b,
                power=rng.uniform(2.0, 2.5), harmonics=harmonics, scalp=rng.uniform(4, 7),
                bone=rng.uniform(4.5, 7), height=height, thickness=thickness, slice_z=slice_z,
                atrophy=atrophy, hu=hu, noise=noise, calc=calc, lesions=[], header=header,
                patient_id=f"ALT{seed:02d}{index:04d}",
                study_uid=generate_uid(entropy_srcs=[*entropy, "study"]),
                series_uid=generate_uid(entropy_srcs=[*entropy, "series"]))
    if rng.random() < 0.06:
        p.motion = {int(k) for k in rng.choice(len(slice_z), size=3, replace=False)}
    p.lesions = [draw_lesion(rng, kind, p) for kind in subtypes]
    if "intraparenchymal" in subtypes and rng.random() < 0.3:
        p.lesions.append(draw_lesion(rng, "intraparenchymal", p))
    return p


def _ventricles(p: Patient, x: Arr, y: Arr, t: float) -> Arr:
    """Lateral (frontal horn, body, atrium, occipital and temporal horns), third, fourth."""
    grow = 0.9 + 0.8 * p.atrophy
    points = [(7, -30, 0.5, 0.09, 4.0), (8, -23, 0.52, 0.1, 4.5), (8, -15, 0.53, 0.1, 4.5),
              (9, -7, 0.55, 0.09, 4.5), (10, 1, 0.55, 0.08, 4.5), (12, 9, 0.53, 0.08, 4.5),
              (15, 16, 0.5, 0.08, 5.0), (17, 22, 0.47, 0.08, 5.5), (19, 30, 0.44, 0.06, 4.5),
              (18, 37, 0.42, 0.05, 3.5), (16, 43, 0.41, 0.04, 2.5),
              (30, -8, 0.3, 0.04, 1.5 + 2 * p.atrophy)]
    f = np.zeros_like(x)
    for px, py, tc, tw, sg in points:
        w = zw(t, tc, tw)
        if w > 0.05:
            for s in (-1, 1):
                f += w * ball(x, y, s * (px + 2 * p.atrophy), py, sg * grow)
    f += 0.9 * zw(t, 0.15, 0.05) * ball(x, y, 0, 12 + 0.1 * p.b, 4 * grow)
    third = (np.abs(x) < 1 + 2.5 * p.atrophy) & (y > -14) & (y < 8) & (0.32 < t < 0.45)
    return (f > 0.5) | third


def _render(p: Patient, z: float) -> tuple[Arr, dict[str, Arr], Arr]:
    """HU of one thin section at height ``z`` (mm), the subtype masks, and the head mask."""
    t = z / p.height
    x, y = p.x, p.y
    theta, r = np.arctan2(y, x), np.hypot(x, y)
    c, s = np.abs(np.cos(theta)) / p.a, np.abs(np.sin(theta)) / p.b
    radius = (c**p.power + s**p.power) ** (-1 / p.power)
    for k, amp, ph in p.harmonics:
        radius = radius * (1 + amp * np.cos(k * theta + ph))
    scale = dome(t)
    slope = abs(dome(t + 0.01) - dome(t - 0.01)) / 0.02 * p.b / p.height
    bone = p.bone * min(4.0, float(np.sqrt(1 + slope**2)))  # obliquely cut bone looks thicker
    depth = radius * scale - r  # mm below the scalp surface
    out = np.full(x.shape, -1000.0, np.float32)
    # headrest (image frame): a curved plastic shell on foam, under the back of the head
    shell = p.header["cy"] + p.b + 10 + p.xi**2 / 260
    out[(np.abs(p.yi - shell) < 2.5) & (np.abs(p.xi) < 90)] = 200
    out[(p.yi > shell - 10) & (p.yi < shell - 2.5) & (np.abs(p.xi) < 85)] = -820
    if p.calc["scalp_hematoma"] is not None and t > 0.3:  # not intracranial: never labelled
        th0, hw, tmax, val = p.calc["scalp_hematoma"]
        bulge = tmax * np.clip(1 - (angle_diff(theta, th0) / hw) ** 2, 0, None) * (t < 0.85)
        out[(depth < 0) & (depth > -bulge)] = val
    head = depth > 0
    out[head] = p.hu["scalp"]
    sdh, edh, fracture, push = extra_axial(p, theta, t)
    inner = depth - p.scalp - bone  # depth below the inner table
    u = np.clip((depth - p.scalp) / bone, 0, 1)
    skull = head & (depth > p.scalp) & (inner <= 0) & ~fracture
    out[skull] = (p.hu["diploe"] + (p.hu["table"] - p.hu["diploe"]) * (2 * u - 1) ** 2)[skull]
    cranial = inner > 0
    # the face and anterior skull base take the front of the lowest levels
    # (a curved floor: the middle cranial fossae reach further forward than the midline)
    y_face = -p.b * scale * (0.35 - 2.5 * max(0.0, 0.2 - t)) if t < 0.2 else -1e9
    y_floor = y_face + 12 * np.exp(-((x / 22) ** 2)) - 10 * np.exp(-(((np.abs(x) - 40) / 18) ** 2))
    face = cranial & (y < y_floor)
    brain = cranial & ~face
    dbrain = inner - sdh - edh  # the brain is pushed in by extra-axial blood
    xm = x - push * np.exp(-((y / 70) ** 2))  # midline shift, largest at the centre
    rim = 0.5 + 2.5 * p.atrophy
    dcx = dbrain - rim
    out[brain] = p.hu["wm"]
    supra = t > 0.27
    phase = (15 * theta + 2.2 * np.sin(3 * theta + 9 * t + p.harmonics[0][2])
             + 1.3 * np.sin(5 * theta - 6 * t + p.harmonics[1][2]))
    ws, sdepth = 0.07 + 0.12 * p.atrophy, 10 + 8 * p.harmonics[2][1] / 0.025
    sphase = np.abs(np.sin(phase))
    grey = brain & ((dcx < 2.8) | ((sphase < ws + 0.3) & (dcx < sdepth + 2.5)))
    out[grey] = p.hu["gm"]
    nuclei = sum(zw(t, tc, tw) * ball(xm, y, sx * px, py, sg)
                 for px, py, tc, tw, sg in ((12, -18, 0.47, 0.07, 5), (21, -4, 0.41, 0.06, 7),
                                            (9, 8, 0.39, 0.05, 7.5)) for sx in (-1, 1))
    out[brain & (np.asarray(nuclei) > 0.5)] = p.hu["gm"] + 2
    sulci = brain & supra & (sphase < ws) & (dcx < sdepth) | brain & (dbrain < rim)
    fissure = brain & (t > 0.3) & (np.abs(xm) < 0.8 + 2 * p.atrophy)
    sylvian = brain & (0.3 < t < 0.42) & (np.minimum(
        segment(xm, y, (18, -4), (60, -14)), segment(xm, y, (-18, -4), (-60, -14)))
        < 1 + 1.5 * p.atrophy)
    cisterns = brain & (((0.24 < t < 0.3) & (ball(xm, y, 0, -8, 6) > 0.5))
                        | ((0.26 < t < 0.33) & (np.abs(np.hypot(xm, y - 2) - 13) < 1.5))
                        | ((0.3 < t < 0.36) & (ball(xm, y, 0, 16, 3) > 0.5)))
    vent = brain & _ventricles(p, xm, y, t)
    out[sulci | fissure | sylvian | cisterns | vent] = p.hu["csf"]
    posterior_fossa(p, out, brain, x, y, t)
    skull_base(p, out, face, cranial, x, y, t, scale, y_floor)
    # falx, sinuses, tentorium: thin normal hyperdensities
    if t > 0.3:
        falx_here = brain & ((np.abs(y) > 35) | (t > 0.6))
        w = np.exp(-((xm / 0.9) ** 2)) * falx_here
        out[:] = out * (1 - w) + p.hu["falx"] * w
    sinus = brain & (t > 0.3) & (inner < 6) & (np.abs(xm) < 4 * (1 - inner / 6)) & (
        (y > 0) | (t > 0.55))
    transverse = brain & (0.17 < t < 0.26) & (inner < 4) & (y > 0.3 * p.b)
    out[sinus | transverse] = p.hu["sinus"]
    calcifications(p, out, brain, xm, y, t)
    masks = paint_lesions(p, out, brain, sdh, edh, inner, xm, y, t, vent, sulci, sylvian, cisterns,
                     theta)
    # beam hardening: bright rim under the inner table, cupping, Hounsfield bar
    rimw = np.exp(-np.clip(inner, 0, None) / 1.2) * cranial
    out += (p.noise["rim"] * rimw - p.noise["cup"] * (1 - (r / np.maximum(radius * scale, 1)) ** 2)
            * brain).astype(np.float32)
    if 0.12 < t < 0.22:
        out[brain & (np.abs(y - 4) < 4) & (np.abs(x) < 30)] -= 14
    return out, masks, head


def render_slice(p: Patient, z: float, rng: np.random.Generator, index: int = -1
                 ) -> tuple[Arr, dict[str, Arr]]:
    """One reconstructed slice: two sub-sections averaged (partial volume), then correlated,
    signal-dependent noise, skull-base streaks and, on a few slices, motion."""
    quarter = p.thickness / 4
    a, ma, head = _render(p, z - quarter)
    b, mb, _ = _render(p, z + quarter)
    hu = 0.5 * (a + b)
    masks = {k: ma[k] | mb[k] for k in SUBTYPES}
    t = z / p.height
    k_px = p.noise["kernel_mm"] / p.spacing
    g = gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), k_px)
    g /= max(float(g.std()), 1e-6)
    sigma = p.noise["sigma"] * np.where(head, 1.6 if t < 0.27 else 1.0, 0.6)
    density = np.sqrt(np.clip((hu + 1000) / 1040, 0, 3))
    hu = hu + sigma * g * (1 - p.noise["poisson"] + p.noise["poisson"] * density)
    if t < 0.25:
        for ang, off in rng.uniform([0, -30], [np.pi, 30], size=(3, 2)):
            dist = np.abs(np.cos(ang) * p.y - np.sin(ang) * p.x - off)
            hu += (rng.choice([-1, 1]) * p.noise["streak"] * np.exp(-((dist / 1.5) ** 2))
                   * head).astype(np.float32)
    if index in p.motion:
        shift = max(1, round(2.0 / p.spacing))
        hu = (hu + np.roll(hu, shift, axis=1) + np.roll(hu, -shift, axis=0)) / 3
    return hu.astype(np.float32), masks
