"""The domain check in the DICOM outputs: a study outside the model's training data gets an SR
and key images that say so plainly (text, score, burnt-in warning, Image Comments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from net_helpers import tool, wait_for
from web_helpers import FakePredictor

from ich.labels import LABELS
from ich.net.sc import build_sc, render_key_image
from ich.net.sr import OUT_OF_DOMAIN_NOTE, TriageResult, build_sr, domain_text


class OutOfDomainPredictor(FakePredictor):
    """FakePredictor whose predictions carry a domain check (fixed flag and score)."""

    def __init__(self, in_domain: bool, score: float) -> None:
        super().__init__()
        self.in_domain, self.score = in_domain, score

    def predict_slices(self, hus: list[np.ndarray], metas: list[Any]) -> Any:
        pred = super().predict_slices(hus, metas)
        pred.in_domain, pred.domain_score = self.in_domain, self.score
        return pred


def _texts(sr: pydicom.Dataset) -> list[str]:
    return [str(i.TextValue) for i in sr.ContentSequence if i.ValueType == "TEXT"]


def test_domain_text_in_words() -> None:
    assert domain_text(None, None) is None
    inside = domain_text(True, 0.42)
    assert inside is not None and "inside" in inside and "0.42" in inside
    outside = domain_text(False, 2.5)
    assert outside is not None and OUT_OF_DOMAIN_NOTE in outside and "2.50" in outside


def test_sr_says_out_of_domain(ct_study: list[Path], tmp_path: Path) -> None:
    headers: list[pydicom.Dataset] = [pydicom.dcmread(f, stop_before_pixels=True)
                                      for f in ct_study]
    probs = np.array([0.9, 0.1, 0.7, 0.2, 0.3, 0.05])
    keys = {label: [headers[2]] for label in LABELS}
    out = build_sr(headers, TriageResult(probs, 0.5, keys, in_domain=False, domain_score=3.25),
                   [], "ICH", pydicom.uid.generate_uid())
    texts = _texts(out)
    assert any(OUT_OF_DOMAIN_NOTE in t and "3.25" in t for t in texts)
    inside = build_sr(headers, TriageResult(probs, 0.5, keys, in_domain=True, domain_score=0.5),
                      [], "ICH", pydicom.uid.generate_uid())
    assert not any(OUT_OF_DOMAIN_NOTE in t for t in _texts(inside))
    assert any("inside the model's training data" in t for t in _texts(inside))
    unknown = build_sr(headers, TriageResult(probs, 0.5, keys), [], "ICH",
                       pydicom.uid.generate_uid())
    assert not any("training data" in t for t in _texts(unknown))


def test_key_image_burns_in_the_warning(ct_study: list[Path]) -> None:
    src = pydicom.dcmread(ct_study[3])
    hu = src.pixel_array.astype(np.float32) * float(src.RescaleSlope) + float(
        src.RescaleIntercept)
    probs = np.full(6, 0.5)
    plain = render_key_image(hu, None, probs, "title")
    warned = render_key_image(hu, None, probs, "title", OUT_OF_DOMAIN_NOTE)
    assert plain.shape == warned.shape

    def red(img: np.ndarray) -> int:  # text pixels drawn in the warning's red
        r, g, b = (img[..., c].astype(int) for c in range(3))
        return int(((r > 200) & (g < 120) & (b < 120)).sum())

    assert red(plain) == 0 and red(warned) > 100
    sc = build_sc(src, warned, pydicom.uid.generate_uid(), 1, OUT_OF_DOMAIN_NOTE)
    assert sc.ImageComments == OUT_OF_DOMAIN_NOTE and sc.BurnedInAnnotation == "YES"


@pytest.mark.net
@pytest.mark.slow
def test_node_outputs_say_out_of_domain(make_node: Any, ct_study: list[Path]) -> None:
    import subprocess

    node = make_node(predictor=OutOfDomainPredictor(False, 2.75))
    subprocess.run([tool("storescu"), "-aec", "ICH", "127.0.0.1", str(node.port),
                    *map(str, ct_study)], check=True, capture_output=True, timeout=120)
    wait_for(lambda: node.store.query("SELECT status FROM node_studies WHERE status='done'"),
             60, "study triaged")
    sr_path = Path(node.store.query("SELECT sr_path FROM node_studies")[0]["sr_path"])
    assert any(OUT_OF_DOMAIN_NOTE in t and "2.75" in t
               for t in _texts(pydicom.dcmread(sr_path)))
    check = subprocess.run([tool("dciodvfy"), str(sr_path)], capture_output=True, text=True)
    assert [ln for ln in (check.stdout + check.stderr).splitlines()
            if ln.startswith("Error")] == []
    scs = [pydicom.dcmread(p) for p in sr_path.parent.glob("sc_*.dcm")]
    assert scs and all(OUT_OF_DOMAIN_NOTE in str(s.ImageComments) for s in scs)
