"""ich: acute intracranial hemorrhage detection on head CT.

Research software, not a medical device. The public names below are imported lazily so that
``import ich`` stays fast (no torch until a model is needed).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "LABELS": "ich.labels",
    "read_slice": "ich.dicom.io",
    "read_meta": "ich.dicom.io",
    "Slice": "ich.dicom.io",
    "SliceMeta": "ich.dicom.io",
    "apply_window": "ich.dicom.windowing",
    "stack_windows": "ich.dicom.windowing",
    "WINDOWS": "ich.dicom.windowing",
    "weighted_log_loss": "ich.eval.metrics",
    "per_label_log_loss": "ich.eval.metrics",
    "IchError": "ich.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ich' has no attribute {name!r}")
