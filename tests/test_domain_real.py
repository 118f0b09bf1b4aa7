"""A phantom-trained model flags real head CT as outside its training data (real sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ich.dicom.io import read_slice
from ich.inference import Predictor


@pytest.mark.real
@pytest.mark.slow
def test_tiny_phantom_model_flags_every_real_series(tiny_run: Path, rsna_sample: Path) -> None:
    predictor = Predictor.from_run(tiny_run)
    series: dict[str, list] = {}
    for path in sorted((rsna_sample / "stage_2_train").glob("*.dcm")):
        s = read_slice(path)
        series.setdefault(s.meta.series_instance_uid, []).append(s)
    assert len(series) == 3
    scores = []
    for slices in series.values():
        pred = predictor.predict_slices([s.hu for s in slices], [s.meta for s in slices])
        scores.append(pred.domain_score)
        assert pred.in_domain is False, f"real series scored {pred.domain_score:.2f} (<= 1)"
    assert np.all(np.isfinite(scores))
