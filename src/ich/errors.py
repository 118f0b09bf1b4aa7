"""Named exceptions of ich.

Every error a user can trigger with bad input derives from :class:`IchError` and says which file
(or setting) is at fault and why, so that batch jobs can record the message and carry on, and a
person reading it knows what to fix.
"""

from __future__ import annotations

from pathlib import Path


class IchError(Exception):
    """Base class of every error ich raises on purpose."""


class DicomReadError(IchError):
    """A file could not be turned into a trustworthy CT slice.

    Args:
        path: The file at fault.
        reason: What is wrong, in words a person understands.
        tag: The DICOM attribute involved, e.g. ``"(7FE0,0010) Pixel Data"``, when there is one.
    """

    def __init__(self, path: str | Path, reason: str, tag: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.tag = tag
        where = f" [{tag}]" if tag else ""
        super().__init__(f"{self.path}: {reason}{where}")


class NotDicomError(DicomReadError):
    """The file is empty, unreadable or not a DICOM Part 10 / raw DICOM data set."""


class NoPixelDataError(DicomReadError):
    """The data set has no (7FE0,0010) Pixel Data."""


class TruncatedPixelDataError(DicomReadError):
    """(7FE0,0010) Pixel Data is shorter than Rows × Columns × BitsAllocated needs."""


class UnsupportedImageError(DicomReadError):
    """The image is valid DICOM but not a single-frame CT slice ich can use (modality,
    multi-frame, implausible size, colour, unsupported transfer syntax)."""


class ModalityLutError(UnsupportedImageError):
    """The stored values cannot become HU by the linear rescale of PS3.3 C.11.1.

    Raised when (0028,1052) Rescale Intercept or (0028,1053) Rescale Slope is missing (both
    are Type 1 in the CT Image Module, C.8.2.1) or when a (0028,3000) Modality LUT Sequence is
    present: ich refuses rather than guess an intercept of 0 (a wrong HU scale reads as a
    confident but wrong image) or ignore a non-linear table.
    """


class ConfigError(IchError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class CacheError(IchError):
    """A preprocessing cache is missing, incomplete, or was built with other settings."""


class CheckpointError(IchError):
    """A checkpoint or run folder is missing or does not describe itself completely."""


class DataOverlapError(IchError):
    """Evaluation data share patients or images with the training set of the run scored."""


class LabelsError(IchError):
    """A label CSV is malformed (wrong columns, unknown label names, bad values)."""


class UnknownLabelError(LabelsError, ValueError):
    """A label asked of a run (a heatmap, a column) that the run does not predict.

    Also a ValueError: callers that validate arguments catch it as one.
    """


class ImageReadError(IchError):
    """An image file (PNG, JPEG, TIFF) could not be read as the declared kind of CT slice.

    Args:
        path: The file at fault.
        reason: What is wrong (unreadable, colour, bit depth other than declared).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
