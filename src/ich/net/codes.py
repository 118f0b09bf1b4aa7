"""Every coded concept the node writes, in one pinned table (tested in tests/net/test_codes.py).

Wrong SNOMED CT codes circulate for the hemorrhage subtypes, so a code is written only where it
was checked against a primary source; the others use this project's local coding scheme
``99ICH`` (PS3.3 8.2: designators beginning with "99" are private), so a receiver never reads a
wrong SNOMED meaning. Sources checked:

- SCT 1386000 "Intracranial hemorrhage": pydicom's ``codes.SCT.IntracranialHemorrhage`` (DICOM
  PS3.16 concept table).
- SCT 21454007 "Subarachnoid hemorrhage" and SCT 274100004 "Cerebral hemorrhage": the project's
  design notes (verified there against SNOMED CT).
- Epidural, intraventricular and subdural: no primary source was reachable when this was
  written, hence local codes; replace them by SCT codes once verified. Checked and not found:
  DICOM PS3.16's concept tables as shipped in pydicom 3.0.2 (``pydicom.sr._concepts_dict``:
  no subdural, extradural/epidural or intraventricular hemorrhage concept) and highdicom; the
  SCT values seen in third-party repositories were not taken (one labels 274100004
  "Intracranial hemorrhage", while OHDSI's vocabulary names it "Cerebral hemorrhage"), nor
  codes from memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ich.labels import check_label_names

LOCAL_SCHEME = "99ICH"


@dataclass(frozen=True)
class LabelCode:
    """The finding code of one label and where it was verified."""

    label: str
    code: Code
    source: str


FINDING_CODES: dict[str, LabelCode] = {
    "any": LabelCode("any", codes.SCT.IntracranialHemorrhage,
                     "pydicom codes.SCT.IntracranialHemorrhage (DICOM PS3.16)"),
    "epidural": LabelCode("epidural", Code("EDH", LOCAL_SCHEME, "Epidural hemorrhage"),
                          "local code (SNOMED CT code not yet verified)"),
    "intraparenchymal": LabelCode(
        "intraparenchymal", Code("274100004", "SCT", "Cerebral hemorrhage"),
        "SNOMED CT 274100004, verified in the design notes"),
    "intraventricular": LabelCode(
        "intraventricular", Code("IVH", LOCAL_SCHEME, "Intraventricular hemorrhage"),
        "local code (SNOMED CT code not yet verified)"),
    "subarachnoid": LabelCode(
        "subarachnoid", Code("21454007", "SCT", "Subarachnoid hemorrhage"),
        "SNOMED CT 21454007, verified in the design notes"),
    "subdural": LabelCode("subdural", Code("SDH", LOCAL_SCHEME, "Subdural hemorrhage"),
                          "local code (SNOMED CT code not yet verified)"),
}


def finding_code(label: str) -> LabelCode:
    """The finding code of any label a run may predict.

    The six RSNA labels keep their pinned codes above (``FINDING_CODES``: exactly those six, in
    ``LABELS`` order, checked by the tests). Any other label (a run trained on its own
    label set, e.g. a single ``hemorrhage`` or a challenge's subset) gets a code in the local
    scheme ``99ICH`` whose value and meaning are the label name itself: a receiver sees plainly
    that it is this project's own concept, never a SNOMED CT meaning guessed for it.

    Raises:
        LabelsError: the label is not a valid label name (letters and digits).
    """
    known = FINDING_CODES.get(label)
    if known is not None:
        return known
    check_label_names((label,))
    # (0008,0100) Code Value is SH (16 characters): a longer name keeps 10 of them and a digest
    # of the whole, so two long names never share a code; the meaning (LO, 64) is the name.
    value = label if len(label) <= 16 else (
        label[:10] + hashlib.sha256(label.encode()).hexdigest()[:6])
    return LabelCode(label, Code(value, LOCAL_SCHEME, label[:64]),
                     "local code: a label of the run's own label set")

PRESENT = codes.SCT.Present  # SCT 52101004
ABSENT = codes.SCT.Absent  # SCT 272519000
PROBABILITY = codes.DCM.Probability  # DCM 122157
NO_UNITS = Code("1", "UCUM", "no units")
HEAD = codes.SCT.Head  # SCT 69536005
CT_HEAD_PROCEDURE = codes.LN.HeadCT  # LOINC 24725-4 "CT Head" (as pydicom names it)
COMMENT = codes.DCM.Comment  # DCM 121106
ALGORITHM_NAME = "ich hemorrhage triage"
