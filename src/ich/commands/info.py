"""``ich info FILE [FILE ...]``: the key metadata of DICOM slices, as a table or JSON.

The first thing one does with an unknown CT folder (like the RSNA notebooks'
``show_dicom_metadata``): identifiers, geometry, pixel encoding, rescale and window values,
transfer syntax, whether the RSNA 12-bit wrap fix applies, and the HU range actually read. A bad
file is reported on stderr and the others are still shown; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ich.dicom.io import Slice, read_slice, transfer_syntax_name
from ich.errors import DicomReadError

#: (key in :func:`describe_slice`'s dict, label in the table), in display order.
FIELDS: tuple[tuple[str, str], ...] = (
    ("path", "File"),
    ("patient_id", "Patient ID"),
    ("study_instance_uid", "Study Instance UID"),
    ("series_instance_uid", "Series Instance UID"),
    ("sop_instance_uid", "SOP Instance UID"),
    ("modality", "Modality"),
    ("instance_number", "Instance Number"),
    ("size", "Rows × Columns"),
    ("pixel_spacing", "Pixel Spacing (mm)"),
    ("slice_thickness", "Slice Thickness (mm)"),
    ("image_position_patient", "Image Position (Patient)"),
    ("image_orientation_patient", "Image Orientation (Patient)"),
    ("bits_allocated", "Bits Allocated"),
    ("bits_stored", "Bits Stored"),
    ("pixel_representation", "Pixel Representation"),
    ("photometric_interpretation", "Photometric Interpretation"),
    ("rescale_slope", "Rescale Slope"),
    ("header_rescale_intercept", "Rescale Intercept"),
    ("wrap_fixed", "12-bit wrap fix applied"),
    ("rescale_intercept", "Intercept used for HU"),
    ("window_center", "Window Center"),
    ("window_width", "Window Width"),
    ("transfer_syntax", "Transfer Syntax"),
    ("hu_min", "HU min"),
    ("hu_max", "HU max"),
    ("hu_mean", "HU mean"),
)


def describe_slice(slc: Slice) -> dict[str, Any]:
    """JSON-ready description of a slice: its metadata plus the HU statistics.

    Keys are SliceMeta's field names plus ``size``, ``transfer_syntax`` (readable name),
    ``hu_min``, ``hu_max`` and ``hu_mean``; tuples become lists.
    """
    out: dict[str, Any] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in slc.meta.to_dict().items()
    }
    out["size"] = f"{slc.meta.rows} × {slc.meta.columns}"
    out["transfer_syntax"] = transfer_syntax_name(slc.meta.transfer_syntax_uid)
    out["hu_min"] = float(np.min(slc.hu))
    out["hu_max"] = float(np.max(slc.hu))
    out["hu_mean"] = round(float(np.mean(slc.hu, dtype=np.float64)), 2)
    return out


def _show(key: str, value: Any, info: dict[str, Any]) -> str:
    """One value as the table shows it (units and meanings spelled out where they help)."""
    if value is None or value == "":
        return "-"
    if key == "pixel_representation":
        return f"{value} ({'signed' if value else 'unsigned'})"
    if key == "wrap_fixed":
        return "yes (BitsStored 12, unsigned, intercept > -100)" if value else "no"
    if key == "transfer_syntax":
        return f"{value} ({info['transfer_syntax_uid']})"
    if isinstance(value, list):
        return ", ".join(f"{v:.10g}" for v in value)
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def format_table(info: dict[str, Any]) -> str:
    """The description as aligned ``label : value`` lines."""
    width = max(len(label) for _, label in FIELDS)
    lines = [f"{label:<{width}} : {_show(key, info.get(key), info)}" for key, label in FIELDS]
    return "\n".join(lines)


def show_files(paths: list[Path], as_json: bool, out: TextIO, err: TextIO) -> int:
    """Describe each file on ``out``; report unreadable ones on ``err`` and carry on.

    Returns:
        The exit code: 0 if every file was read, 1 otherwise.
    """
    described: list[dict[str, Any]] = []
    failed = 0
    for path in paths:
        try:
            info = describe_slice(read_slice(path))
        except DicomReadError as exc:
            failed += 1
            print(f"ich info: error: {exc}", file=err)
            continue
        if as_json:
            described.append(info)
        else:
            if described:
                print(file=out)
            print(format_table(info), file=out)
            described.append(info)
    if as_json:
        print(json.dumps(described, indent=2), file=out)
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich info``."""
    p = sub.add_parser(
        name,
        help=help_text,
        description="Print the key metadata of DICOM CT slices (identifiers, geometry, pixel "
        "encoding, rescale, window, transfer syntax, 12-bit wrap fix) and the HU range read. "
        "Unreadable files are reported on stderr; the exit code is 1 if any failed.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="DICOM file(s)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of objects (one per readable file) instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ich info``."""
    return show_files(list(args.files), bool(args.json), sys.stdout, sys.stderr)
