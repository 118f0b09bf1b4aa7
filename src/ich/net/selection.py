"""Which series of a study are triaged: rules with a reason a person understands for each refusal.

Defaults fit non-contrast head CT; every threshold can be changed in YAML (``--rules FILE``),
unknown keys are errors. Like MONAI Deploy's selection rules (string patterns, numeric ranges),
but each rejected series carries the reasons it failed, into the SR and the web app.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydicom.dataset import Dataset

from ich.errors import ConfigError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class SelectionRules:
    """Rules a series must meet to be triaged.

    Attributes:
        modalities: Accepted (0008,0060) Modality values.
        sop_classes: Accepted SOP classes (single-frame CT Image Storage: ich reads slices).
        max_tilt_degrees: Largest angle between the slice normal and the patient's z axis
            (axial within a tolerance: gantry tilt up to ~25 degrees is common).
        slice_thickness_mm: Accepted (0018,0050) Slice Thickness range.
        spacing_mm: Accepted distance between neighbouring slice positions.
        max_spacing_variation: Largest (max - min) / median of the gaps (missing slices).
        min_slices: Fewest slices.
        min_coverage_mm: Shortest extent along the normal (the head is ~120-200 mm).
        excluded_image_types: (0008,0008) Image Type values that disqualify (scouts).
        require_original: Refuse DERIVED / SECONDARY images (reformats, screenshots).
    """

    modalities: tuple[str, ...] = ("CT",)
    sop_classes: tuple[str, ...] = (CT_IMAGE_STORAGE,)
    max_tilt_degrees: float = 30.0
    slice_thickness_mm: tuple[float, float] = (0.5, 10.0)
    spacing_mm: tuple[float, float] = (0.4, 10.0)
    max_spacing_variation: float = 0.5
    min_slices: int = 16
    min_coverage_mm: float = 60.0
    excluded_image_types: tuple[str, ...] = ("LOCALIZER", "SCOUT", "TOPOGRAM")
    require_original: bool = True

    @classmethod
    def from_yaml(cls, path: str | Path) -> SelectionRules:
        """Rules from a YAML mapping of the attribute names above (missing keys keep defaults).

        Raises:
            ConfigError: unreadable file, unknown key or a value of the wrong shape.
        """
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read selection rules ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: selection rules must be a mapping")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{path}: unknown selection rule(s) {unknown}; known: "
                              f"{sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            default = getattr(cls(), key)
            try:
                if isinstance(default, tuple):
                    values[key] = tuple(type(default[0])(v) for v in value)
                    if len(default) == 2 and isinstance(default[0], float) and len(value) != 2:
                        raise ValueError("a range needs two numbers")
                else:
                    values[key] = type(default)(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path}: selection rule {key}: {exc}") from exc
        return replace(cls(), **values)


@dataclass
class SeriesDecision:
    """The verdict on one series: eligible, or the reasons it is not."""

    series_instance_uid: str
    series_number: str
    description: str
    n_instances: int
    reasons: list[str] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return not self.reasons

    def label(self) -> str:
        """How the series is named to people: number and description, never its UID."""
        desc = f" '{self.description}'" if self.description else ""
        return f"series {self.series_number or '?'}{desc} ({self.n_instances} images)"


def _floats(value: Any) -> list[float] | None:
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def select_series(headers: Sequence[Dataset], rules: SelectionRules) -> SeriesDecision:
    """Decide on one series from its instances' headers (pixel data not needed)."""
    first = headers[0]
    decision = SeriesDecision(str(first.get("SeriesInstanceUID", "")),
                              str(first.get("SeriesNumber", "") or ""),
                              str(first.get("SeriesDescription", "") or ""), len(headers))
    why = decision.reasons
    modality = str(first.get("Modality", "") or "")
    if modality not in rules.modalities:
        why.append(f"modality {modality or 'missing'} is not {'/'.join(rules.modalities)}")
    # RSNA files carry the SOP class only in the file meta: (0002,0002).
    sop_classes = {str(h.get("SOPClassUID", "") or getattr(h, "file_meta", Dataset()).get(
        "MediaStorageSOPClassUID", "")) for h in headers}
    if sop_classes - set(rules.sop_classes):
        why.append("not single-frame CT Image Storage (Enhanced/multi-frame CT is not analysed)")
    image_types = {str(v).upper() for h in headers for v in (h.get("ImageType") or [])}
    bad = sorted(image_types & set(rules.excluded_image_types))
    if bad:
        why.append(f"a {'/'.join(bad).lower()} image (Image Type {', '.join(bad)})")
    if rules.require_original and ({"DERIVED", "SECONDARY"} & image_types):
        why.append("derived or secondary images (reformat or screen capture), not original")
    why.extend(_geometry_reasons(headers, rules))
    if len(headers) < rules.min_slices:
        why.append(f"only {len(headers)} slices (at least {rules.min_slices} needed)")
    return decision


def _geometry_reasons(headers: Sequence[Dataset], rules: SelectionRules) -> list[str]:
    """Orientation, thickness, spacing and coverage checks on the slice geometry."""
    iops = [_floats(h.get("ImageOrientationPatient")) for h in headers]
    ipps = [_floats(h.get("ImagePositionPatient")) for h in headers]
    if any(v is None or len(v) != 6 for v in iops) or any(v is None or len(v) != 3
                                                             for v in ipps):
        return ["slice position or orientation missing, so the slices cannot be ordered"]
    iop = np.asarray(iops, float)
    if np.abs(iop - iop[0]).max() > 1e-3:
        return ["slices differ in orientation (not one consistent stack)"]
    sizes = {(h.get("Rows"), h.get("Columns")) for h in headers}
    out = [] if len(sizes) == 1 else ["slices differ in image size"]
    normal = np.cross(iop[0, :3], iop[0, 3:])
    norm = max(float(np.linalg.norm(normal)), 1e-9)
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal[2])) / norm)))
    if tilt > rules.max_tilt_degrees:
        out.append(f"not axial: slices are {tilt:.0f} degrees off axial (at most "
                   f"{rules.max_tilt_degrees:g} allowed)")
    thick = _floats([h.get("SliceThickness") for h in headers
                     if h.get("SliceThickness") not in (None, "")])
    lo, hi = rules.slice_thickness_mm
    if thick and not lo <= float(np.median(thick)) <= hi:
        out.append(f"slice thickness {np.median(thick):g} mm outside {lo:g}-{hi:g} mm")
    z = np.sort(np.asarray(ipps, float) @ normal)
    gaps = np.diff(z)
    if len(gaps):
        if (gaps < 1e-3).any():
            out.append("two or more slices at the same position")
        else:
            med = float(np.median(gaps))
            lo, hi = rules.spacing_mm
            if not lo <= med <= hi:
                out.append(f"slice spacing {med:.2g} mm outside {lo:g}-{hi:g} mm")
            elif (gaps.max() - gaps.min()) / med > rules.max_spacing_variation:
                out.append(f"uneven slice spacing ({gaps.min():.2g}-{gaps.max():.2g} mm): "
                           "slices are missing")
        coverage = float(z[-1] - z[0])
        if coverage < rules.min_coverage_mm:
            out.append(f"covers {coverage:.0f} mm (at least {rules.min_coverage_mm:g} mm needed "
                       "for a head)")
    return out
