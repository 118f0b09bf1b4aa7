"""The domain check in the web app: stored per series, shown plainly, old databases upgraded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from ich.web.store import Store
from ich.web.views import OUT_OF_DOMAIN_NOTE, list_studies, study_detail


def _study(store: Store, uid: str, n_series: int = 1) -> tuple[str, list[str]]:
    series = []
    for k in range(n_series):
        slices = [{"sop_instance_uid": f"{uid}.{k}.{i}", "z": float(i),
                   "sha256": f"{uid}{k}{i}".encode().hex().ljust(64, "0"), "meta": {}}
                  for i in range(2)]
        series.append({"id": f"{uid}-s{k}", "series_instance_uid": f"{uid}.SE{k}", "rows": 8,
                       "columns": 8, "slices": slices})
    sid = store.add_study({"study_instance_uid": uid, "patient_id": uid}, series, [])
    return sid, [s["id"] for s in series]


def _result(store: Store, series_id: str, p_any: float, domain: dict[str, object] | None) -> None:
    probs = np.full((2, 6), p_any)
    store.set_result(series_id, probs, probs, probs[0], domain)


def test_out_of_domain_series_are_reported_plainly(tmp_path: Path) -> None:
    store = Store(tmp_path)
    real, (real_s,) = _study(store, "REAL")
    ok, (ok_s,) = _study(store, "OK")
    old, (old_s,) = _study(store, "OLD")
    mixed, mixed_s = _study(store, "MIX", n_series=2)
    _result(store, real_s, 0.99, {"in_domain": False, "domain_score": 7.5})
    _result(store, ok_s, 0.9, {"in_domain": True, "domain_score": 0.4})
    _result(store, old_s, 0.9, None)  # a model without a domain check
    _result(store, mixed_s[0], 0.2, {"in_domain": True, "domain_score": 0.5})
    _result(store, mixed_s[1], 0.8, {"in_domain": False, "domain_score": 3.0})
    rows = {r["id"]: r for r in list_studies(store)}
    assert rows[real]["in_domain"] is False
    assert rows[real]["domain_note"] == OUT_OF_DOMAIN_NOTE
    assert rows[ok]["in_domain"] is True and rows[ok]["domain_note"] is None
    assert rows[old]["in_domain"] is None
    assert rows[mixed]["in_domain"] is False
    detail = study_detail(store, mixed)
    assert detail is not None
    assert [s["in_domain"] for s in detail["series"]] == [True, False]
    assert [s["domain_score"] for s in detail["series"]] == [0.5, 3.0]
    store.close()


def test_a_database_from_before_the_domain_check_is_upgraded(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "ich.sqlite")
    db.execute("CREATE TABLE results (series_id TEXT PRIMARY KEY, slice_probs TEXT, "
               "cnn_probs TEXT, study_probs TEXT, created REAL)")
    db.commit()
    db.close()
    store = Store(tmp_path)
    sid, (series_id,) = _study(store, "A")
    _result(store, series_id, 0.5, {"in_domain": True, "domain_score": 0.1})
    assert study_detail(store, sid)["series"][0]["in_domain"] is True  # type: ignore[index]
    store.close()
