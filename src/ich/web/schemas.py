"""The API's typed contract: Pydantic models of every JSON answer, so ``/openapi.json``
describes real schemas and clients can generate code from it.

Why ``extra="allow"``: fields added by later features (a study's source, what the DICOM node
sent, an out-of-domain note) pass through unchanged until they get a field of their own here.
Every error, whatever its status, is one shape: :class:`ErrorBody`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

StudyStatus = Literal["queued", "processing", "done", "partial", "failed"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FileProblem(BaseModel):
    """A file of an upload that was not used, or a .zip member that was not read."""

    file: str = Field(description="the name sent (display only; never used as a path)")
    reason: str = Field(description="why, in words a person understands")


class ErrorBody(BaseModel):
    """Every error answer: a sentence, and for uploads the per-file reasons."""

    detail: str
    errors: list[FileProblem] = Field(default_factory=list)
    skipped: list[FileProblem] = Field(default_factory=list)


class LabelProbabilities(RootModel[dict[str, float]]):
    """One probability per label of the run that made it, in the run's column order: the six
    RSNA labels (``any``, ``epidural``, ...), a subset, or the run's own (``hemorrhage``).
    ``/api/info`` lists the labels of the loaded run."""

    root: dict[str, float] = Field(
        json_schema_extra={"example": {"any": 0.91, "epidural": 0.02, "intraparenchymal": 0.85,
                                       "intraventricular": 0.4, "subarachnoid": 0.3,
                                       "subdural": 0.05}})


class Limits(BaseModel):
    max_files: int
    max_upload_bytes: int


class Info(_Open):
    """Version, labels, windows, model provenance and the research-use notice."""

    version: str
    labels: list[str] = Field(description="the loaded run's labels (probabilities are keyed "
                              "by them; flag= and label= accept them)")
    thresholds: dict[str, float] = Field(
        description="per label, the probability at or above which it is flagged: the run's "
        "out-of-fold choice where it made one, else 0.5")
    thresholds_source: str
    triage: str = Field(description="what ranks the worklist: 'any', or 'max' (the largest "
                        "label probability) for a run without 'any'")
    notice: str
    provenance: dict[str, Any] = Field(description="what the model is and was trained on; "
                                       "run folders by name only")
    model_ready: bool
    windows: list[str]
    limits: Limits


class UploadResult(_Open):
    """What an upload became."""

    id: str = Field(description="the first study of the upload")
    ids: list[str] = Field(description="every study of the upload, in upload order")
    files: int = Field(description="files read, after unpacking .zip archives")
    errors: list[FileProblem]
    existing: list[str] = Field(description="ids already stored with exactly these files")
    merged: list[str] = Field(default_factory=list,
                              description="ids of stored partial studies this upload completed")
    skipped: list[FileProblem] = Field(default_factory=list,
                                       description=".zip members not read, with the reason")


class StudySummary(_Open):
    """One worklist row."""

    id: str
    status: StudyStatus
    progress: float = Field(ge=0, le=1)
    received: float = Field(description="seconds since the epoch")
    study_instance_uid: str
    patient_id: str
    n_series: int
    n_slices: int
    probabilities: LabelProbabilities | None
    labels: list[str] = Field(description="the labels of this study's results (empty before)")
    score: float | None = Field(description="the ranking number: p(any), or the largest "
                                "label probability for a run without 'any'")
    flags: list[str] = Field(description="labels other than 'any' at or above their "
                             "threshold (see /api/info)")
    n_errors: int


class SliceEntry(BaseModel):
    index: int = Field(description="study-wide slice number used by the image URLs")
    sop_instance_uid: str
    z: float = Field(description="position along the slice normal, mm")
    probabilities: LabelProbabilities | None
    cnn_probabilities: LabelProbabilities | None


class SeriesDetail(_Open):
    id: str
    series_instance_uid: str
    n_slices: int
    rows: int
    columns: int
    status: str
    error: str | None
    probabilities: LabelProbabilities | None
    first_index: int
    slices: list[SliceEntry]


class StudyDetail(StudySummary):
    """A study with every series and slice in order, its file problems and the notice."""

    errors: list[FileProblem]
    series: list[SeriesDetail]
    provenance: dict[str, Any]
    notice: str


class Deleted(BaseModel):
    deleted: str


class SliceHeader(_Open):
    """Header fields of one slice (DICOM's names in snake_case)."""

    sop_instance_uid: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None
    instance_number: int | None = None
    image_position_patient: list[float] | None = None
    image_orientation_patient: list[float] | None = None
    pixel_spacing: list[float] | None = None
    slice_thickness: float | None = None
    rows: int | None = None
    columns: int | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    photometric_interpretation: str | None = None
    transfer_syntax_uid: str | None = None


#: Error answers every route may give, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in (
        (400, "a parameter or the upload could not be read"),
        (401, "missing or wrong access token"),
        (403, "cross-origin write refused"),
        (404, "no such study or slice"),
        (421, "Host header not served here"),
        (422, "parameter out of bounds, or no usable file in the upload"),
    )}
