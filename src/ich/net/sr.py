"""The Comprehensive 3D SR (TID 1500 Measurement Report) that carries a study's triage result.

Per label of the run (the five subtypes and ``any``, or the run's own label set) one measurement
group: finding type = the label's code (:func:`ich.net.codes.finding_code`), a qualitative
evaluation present/absent at the label's operating threshold, the probability as a
measurement (UCUM "1"), and the key slices it was read on. The observer is this device; the
model's provenance (what data it was trained on) is in the algorithm identification. Series the
node did not analyse, with the reasons, the research-use notice and the domain check (a study
outside the model's training data is said to be so, with its score) are TEXT comments at the
root. Patient and study attributes come from the source exactly (missing Type 2 ones empty).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ich import __version__
from ich.labels import LABELS
from ich.net import codes

RESEARCH_NOTICE = "RESEARCH USE ONLY — NOT FOR DIAGNOSIS"
#: What the outputs say when a series lies outside the model's training data (the web app's words).
OUT_OF_DOMAIN_NOTE = "outside the model's training data: results unreliable"

#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the
#: evidence; RSNA files lack them, and an SR must carry them (empty when unknown).
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "ReferringPhysicianName", "AccessionNumber", "StudyID")


@dataclass
class TriageResult:
    """What the model said about a study (the SR's content).

    Attributes:
        probabilities: (L,) study-level probabilities, one per entry of ``labels``.
        threshold: Operating threshold for labels without one in ``thresholds``: at or above
            it a finding is reported present.
        key_images: Per label, the headers of the slices that scored highest for it.
        not_analysed: Series not triaged, as "series 2 'Scout' (2 images): a localizer image".
        provenance: The model's description (name, training data) for the observer context.
        in_domain: False when any analysed series lies outside the model's training data (its
            probabilities are then unreliable); None when the model has no domain check.
        domain_score: The largest series domain score (> 1: outside); None when unknown.
        labels: The run's labels, in the columns' order (default: the six RSNA labels).
        thresholds: Per-label operating thresholds (the run's, chosen on its out-of-fold
            predictions); a label missing here uses ``threshold``.
    """

    probabilities: np.ndarray
    threshold: float
    key_images: dict[str, list[Dataset]]
    not_analysed: list[str] = field(default_factory=list)
    provenance: str = ""
    in_domain: bool | None = None
    domain_score: float | None = None
    labels: tuple[str, ...] = LABELS
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.probabilities) != len(self.labels):
            raise ValueError(f"{len(self.probabilities)} probabilities for "
                             f"{len(self.labels)} labels ({', '.join(self.labels)})")

    def threshold_of(self, label: str) -> float:
        """The operating threshold of one label."""
        return float(self.thresholds.get(label, self.threshold))

    def thresholds_text(self) -> str:
        """The operating thresholds in words (one number when every label shares it)."""
        values = {self.threshold_of(label) for label in self.labels}
        if len(values) == 1:
            return f"operating threshold {values.pop():g}"
        return "operating thresholds " + ", ".join(
            f"{label} {self.threshold_of(label):g}" for label in self.labels)


def domain_text(in_domain: bool | None, domain_score: float | None) -> str | None:
    """The domain check in words for the SR and the key images; None when there is none.

    Why plain words: a reader who sees only the report must learn that the numbers are not to
    be trusted for this study, not decode a flag.
    """
    if in_domain is None:
        return None
    score = ("" if domain_score is None
             else f" (domain score {domain_score:.2f}; above 1 is outside)")
    if in_domain:
        return f"Domain check: inside the model's training data{score}."
    return f"WARNING: {OUT_OF_DOMAIN_NOTE}{score}."


def with_type2(ds: Dataset) -> Dataset:
    """A header copy with the copied Type 2 attributes present (empty where missing).

    The caller's dataset is never modified: a deep copy, since pydicom's shallow copies share
    their data elements (setting an attribute on one changes the other).
    """
    out = copy.deepcopy(ds)
    for keyword in TYPE2_COPIED:
        if keyword not in out:
            setattr(out, keyword, "")
    return out


#: What an SR needs of every evidence instance but the first (highdicom reads the patient and
#: study from the first one only, and of the others just these references).
EVIDENCE_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")


def evidence_header(ds: Dataset) -> Dataset:
    """The four references of one evidence instance, as a new small dataset.

    Why: deep-copying 40 full headers to list them as evidence cost ~0.5 s per SR; the values
    written are the same.
    """
    out = Dataset()
    for keyword in EVIDENCE_KEYWORDS:
        if keyword in ds:
            setattr(out, keyword, ds.data_element(keyword).value)  # type: ignore[union-attr]
    return out


def device_uid(aet: str) -> str:
    """A stable Device Observer UID for this node (the same AE title gives the same UID)."""
    return str(generate_uid(entropy_srcs=["ich-device", aet]))


def _group(label: str, p: float, result: TriageResult,
           algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    code = codes.finding_code(label).code
    keys = result.key_images.get(label, [])
    refs = [hd.sr.SourceImageForMeasurement(str(k.SOPClassUID), str(k.SOPInstanceUID))
            for k in keys]
    measurement = hd.sr.Measurement(
        name=codes.PROBABILITY, value=round(float(p), 6), unit=codes.NO_UNITS,
        algorithm_id=algorithm, referenced_images=refs or None)
    evaluation = hd.sr.QualitativeEvaluation(
        name=code, value=codes.PRESENT if p >= result.threshold_of(label) else codes.ABSENT)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(),
            identifier=f"{label} hemorrhage" if label in LABELS else label),
        finding_type=code, algorithm_id=algorithm, measurements=[measurement],
        qualitative_evaluations=[evaluation],
        source_images=[hd.sr.SourceImageForMeasurementGroup(
            str(k.SOPClassUID), str(k.SOPInstanceUID)) for k in keys] or None,
    )


def build_sr(
    evidence: Sequence[Dataset], result: TriageResult | None, not_analysed: Sequence[str],
    aet: str, series_instance_uid: str, instance_number: int = 1,
    previous: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the SR for one study.

    Args:
        evidence: Headers of the source instances the result is about (same study; for a study
            with nothing eligible, all of its instances).
        result: The model's result, or None when no series could be analysed.
        not_analysed: Reasons for series that were not triaged (also used when ``result`` is
            None).
        aet: This node's AE title (names the observer device).
        series_instance_uid: The SR series (kept across re-triage so versions sit together).
        instance_number: Increases with each version.
        previous: Earlier SRs of this study that this one supersedes (Predecessor Documents).
    """
    evidence = [with_type2(evidence[0])] + [evidence_header(ds) for ds in evidence[1:]]
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(aet), name=aet, manufacturer_name="ich (open source)",
            model_name=f"ich {__version__}"))
    groups = []
    key_datasets: list[Dataset] = []
    if result is not None:
        params = [result.thresholds_text(),
                  f"model: {result.provenance or 'not described'}"]
        if result.in_domain is False:
            params.append(OUT_OF_DOMAIN_NOTE)
        algorithm = hd.sr.AlgorithmIdentification(
            name=codes.ALGORITHM_NAME, version=__version__, parameters=params)
        for k, label in enumerate(result.labels):
            groups.append(_group(label, float(result.probabilities[k]), result, algorithm))
        seen: set[str] = set()
        for keys in result.key_images.values():
            for ds in keys:
                if str(ds.SOPInstanceUID) not in seen:
                    seen.add(str(ds.SOPInstanceUID))
                    key_datasets.append(with_type2(ds))
    if not groups:  # TID 1500 needs one group: say what was looked for, with no result
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=generate_uid(), identifier="not analysed"),
            finding_type=codes.FINDING_CODES["any"].code))  # ICH, whatever the run's labels
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.CT_HEAD_PROCEDURE,
        imaging_measurements=groups,
        # The Image Library describes each image by its geometry; slices without (0018,0050)
        # Slice Thickness (RSNA files) stay referenced by the measurement groups only.
        referenced_images=[d for d in key_datasets if all(
            k in d for k in ("SliceThickness", "PixelSpacing", "ImagePositionPatient"))] or None,
    )
    root = report[0]
    texts = [f"{RESEARCH_NOTICE}. Automated triage by ich {__version__}; probabilities are "
             "model outputs, not findings confirmed by a radiologist."]
    if result is None:
        texts.append("No series of this study could be analysed.")
    else:
        domain = domain_text(result.in_domain, result.domain_score)
        if domain is not None:
            texts.append(domain)
    texts += [f"Not analysed: {reason}" for reason in not_analysed]
    for text in texts:
        root.ContentSequence.append(hd.sr.TextContentItem(
            name=codes.COMMENT, value=text, relationship_type="CONTAINS"))
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=root, series_instance_uid=series_instance_uid,
        series_number=9901, sop_instance_uid=generate_uid(), instance_number=instance_number,
        manufacturer="ich (open source)", is_complete=True, is_final=False, is_verified=False,
        previous_versions=list(previous) or None,
    )
    sr.SeriesDescription = "ich hemorrhage triage (research use only)"
    scheme = Dataset()  # declare the local coding scheme (PS3.3 C.12.1.1.2)
    scheme.CodingSchemeDesignator = codes.LOCAL_SCHEME
    scheme.CodingSchemeName = "ich local codes for hemorrhage findings and run labels"
    scheme.CodingSchemeResponsibleOrganization = "ich project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the notice has an em dash, names may too
    return sr
