"""Hemorrhages of the independent phantom (see ``alt_phantom.py``): parameters drawn per
study, extra-axial thickness maps (with the midline shift they cause) and the painting of each
subtype at one level. Values: acute 50-90 HU, chronic subdural 10-24, edema 12-22.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from alt_shapes import angle_diff, dome

if TYPE_CHECKING:
    from alt_anatomy import Patient

Arr = np.ndarray

SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")


def draw_lesion(rng: np.random.Generator, kind: str, p: Patient) -> dict[str, Any]:
    """One lesion's parameters (angles in the head frame, z as a fraction of the height)."""
    side = rng.choice([0.0, np.pi])
    if kind == "subdural":
        small = rng.random() < 0.15
        state = str(rng.choice(["acute", "chronic", "mixed"], p=[0.65, 0.2, 0.15]))
        return {"kind": kind, "theta": side + rng.uniform(-0.7, 0.7), "hw": rng.uniform(0.5, 1.1),
                "tc": rng.uniform(0.4, 0.75), "hz": rng.uniform(0.05, 0.08) if small
                else rng.uniform(0.1, 0.22), "tmax": rng.uniform(2.5, 4) if small
                else rng.uniform(4, 14), "state": state,
                "value": rng.uniform(10, 24) if state == "chronic" else rng.uniform(55, 85)}
    if kind == "epidural":
        return {"kind": kind, "theta": rng.uniform(0, 2 * np.pi), "hw": rng.uniform(0.25, 0.45),
                "tc": rng.uniform(0.4, 0.75), "hz": rng.uniform(0.07, 0.14),
                "tmax": rng.uniform(8, 22), "value": rng.uniform(60, 90),
                "fracture": bool(rng.random() < 0.5)}
    if kind == "intraparenchymal":
        small = rng.random() < 0.3
        r0 = rng.uniform(3, 5) if small else rng.uniform(8, 20)
        if rng.random() < 0.5:  # basal ganglia / thalamus
            s = rng.choice([-1, 1])
            c = np.array([s * rng.uniform(12, 24), rng.uniform(-8, 10), rng.uniform(0.38, 0.5)])
        else:  # lobar: 20-35 mm under the inner table
            ang, t = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.8)
            rad = 0.62 * p.b * dome(t) - rng.uniform(10, 25)
            c = np.array([np.cos(ang) * rad * p.a / p.b, np.sin(ang) * rad, t])
        n = 1 if small else int(rng.integers(2, 5))
        balls = [(c[0] + rng.normal(0, r0 * 0.4), c[1] + rng.normal(0, r0 * 0.4),
                  c[2] * p.height + rng.normal(0, r0 * 0.3), r0 * rng.uniform(0.6, 1.0))
                 for _ in range(n)]
        return {"kind": kind, "balls": balls, "value": rng.uniform(58, 85),
                "edema": rng.uniform(12, 22) if rng.random() < 0.7 else None,
                "hct": bool(r0 > 12 and rng.random() < 0.4)}
    if kind == "intraventricular":
        return {"kind": kind, "tc": rng.uniform(0.42, 0.5), "hz": rng.uniform(0.1, 0.2),
                "level": rng.uniform(12, 30), "cast": bool(rng.random() < 0.35),
                "value": rng.uniform(55, 80)}
    sites = [str(s) for s in ("sulci", "sylvian", "cisterns") if rng.random() < 0.5] or ["sulci"]
    return {"kind": kind, "sites": sites, "theta": rng.uniform(0, 2 * np.pi),
            "hw": rng.uniform(0.4, 1.2), "tc": rng.uniform(0.45, 0.85),
            "hz": rng.uniform(0.08, 0.22),
            "side": float(rng.choice([-1, 1])), "value": rng.uniform(50, 75)}


def extra_axial(p: Patient, theta: Arr, t: float) -> tuple[Arr, Arr, Arr, float]:
    """Thickness maps (mm) of subdural and epidural collections at this level, and the
    midline shift they cause (mm, positive = to the patient's left)."""
    sdh, edh = np.zeros_like(theta), np.zeros_like(theta)
    fracture = np.zeros(theta.shape, bool)
    push = 0.0
    for les in p.lesions:
        if les["kind"] not in ("subdural", "epidural"):
            continue
        u = 1 - ((t - les["tc"]) / les["hz"]) ** 2
        if u <= 0:
            continue
        da = angle_diff(theta, les["theta"])
        if les["kind"] == "subdural":  # crescent: long, thin, cosine-tapered
            a = np.clip(1 - da / les["hw"], 0, 1)
            thick = les["tmax"] * np.sqrt(u) * np.sin(np.pi / 2 * a) ** 0.7
            sdh = np.maximum(sdh, thick)
        else:  # lens: short, thick, parabolic (biconvex)
            thick = les["tmax"] * np.sqrt(np.clip(u - (da / les["hw"]) ** 2, 0, None))
            edh = np.maximum(edh, thick)
            if les["fracture"] and u > 0.5:
                fracture |= da < 0.025
        push -= np.sign(np.cos(les["theta"])) * 0.35 * les["tmax"] * np.sqrt(u)
    return sdh, edh, fracture, float(np.clip(push, -12, 12))


def paint_lesions(p: Patient, out: Arr, brain: Arr, sdh: Arr, edh: Arr, inner: Arr, xm: Arr, y: Arr,
             t: float, vent: Arr, sulci: Arr, sylvian: Arr, cisterns: Arr, theta: Arr
             ) -> dict[str, Arr]:
    """Paint the hemorrhages of this level into ``out`` and return their masks."""
    masks = {k: np.zeros(out.shape, bool) for k in SUBTYPES}
    cranial_brain = brain & (inner > 0)
    z = t * p.height
    for les in p.lesions:
        kind = les["kind"]
        if kind == "subdural":
            m = cranial_brain & (inner < sdh) & (sdh > 0.3)
            if les["state"] == "mixed" and m.any():  # hypodense, a dependent acute layer
                out[m] = np.where(y > np.median(y[m]), 65, les["value"] * 0.3)[m]
            else:
                out[m] = les["value"]
        elif kind == "epidural":
            m = cranial_brain & (inner < edh) & (edh > 0.3)
            out[m] = les["value"]
        elif kind == "intraparenchymal":
            f = sum(np.exp(-((xm - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2)
                           / (2 * (br / 1.4) ** 2)) for bx, by, bz, br in les["balls"])
            f = np.asarray(f)
            m = cranial_brain & (f > 0.6)
            if les["edema"] is not None:
                out[cranial_brain & (f > 0.22) & ~m] = les["edema"]
            if les["hct"] and m.any():
                out[m] = np.where(y > np.mean(y[m]), les["value"] + 10, 45)[m]
            else:
                out[m] = les["value"]
        elif kind == "intraventricular":
            if abs(t - les["tc"]) > les["hz"]:
                continue
            m = vent & ((y > les["level"]) | les["cast"])
            out[m] = les["value"]
        else:
            m = np.zeros(out.shape, bool)
            if "sulci" in les["sites"] and abs(t - les["tc"]) < les["hz"]:
                m |= sulci & (angle_diff(theta, les["theta"]) < les["hw"])
            if "sylvian" in les["sites"]:
                m |= sylvian & (np.sign(xm) == les["side"])
            if "cisterns" in les["sites"]:
                m |= cisterns
            out[m] = les["value"]
        masks[kind] |= m
    return masks
