"""The JSON API (OpenAPI docs at ``/docs``).

Errors are ``{"detail": "<message a person understands>"}`` with the status code that says what
went wrong: 404 unknown study or slice, 400 bad window or label, 409 results not ready,
413 upload too large, 401 missing token.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ich import __version__
from ich.web import views
from ich.web.heatpool import PoolBusyError
from ich.web.ingest import UploadTooLargeError, ingest
from ich.web.predictor import triage_label
from ich.web.render import (
    BadRequestError,
    WindowOutOfRangeError,
    heatmap_png,
    parse_window,
    slice_png,
)
from ich.web.schemas import (
    ERRORS,
    Deleted,
    ErrorBody,
    Info,
    SliceHeader,
    StudyDetail,
    StudySummary,
    UploadResult,
)
from ich.web.state import AppState

router = APIRouter(prefix="/api", tags=["studies"], responses=ERRORS)
log = logging.getLogger("ich.web")

UPLOAD_DOC = {
    "requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "DICOM files and/or .zip archives of them"}}}}}}
}


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.ich
    return state


def _detail_or_404(state: AppState, study_id: str) -> dict[str, Any]:
    detail = views.study_detail(state.store, study_id, state.thresholds())
    if detail is None:
        raise HTTPException(404, f"no study with id {study_id!r} (deleted, or never uploaded)")
    return detail


@router.get("/info", summary="Version, labels, windows, model provenance and the notice",
            response_model=Info)
def info(request: Request) -> dict[str, Any]:
    state = _state(request)
    labels = state.labels()
    thresholds = state.thresholds()
    return {"version": __version__, "labels": list(labels),
            "thresholds": {k: thresholds.get(k, views.FLAG_THRESHOLD) for k in labels},
            "thresholds_source": "the run's out-of-fold choice" if thresholds else "default 0.5",
            "triage": triage_label(labels) or "max", "notice": views.NOTICE,
            "provenance": state.provenance(), "model_ready": state.predictor is not None,
            "windows": ["brain", "subdural", "bone"],
            "limits": {"max_files": state.settings.max_files,
                       "max_upload_bytes": state.settings.max_upload_bytes}}


@router.post("/studies", status_code=201, openapi_extra=UPLOAD_DOC, response_model=UploadResult,
             summary="Upload DICOM files, folders or .zip; returns the new study ids",
             responses={413: {"model": ErrorBody, "description": "over the configured limits"}})
async def upload(request: Request) -> Any:
    state = _state(request)
    limit = state.settings.max_files
    try:
        form = await request.form(max_files=limit + 1, max_fields=100)
    except MultiPartException as exc:
        if "Too many files" in str(exc):
            raise HTTPException(413, f"too many files: the limit is {limit} per upload") from exc
        raise HTTPException(400, f"could not read the upload: {exc}") from exc
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    try:
        if not files:
            raise HTTPException(400, "no files in the upload: send them as multipart field 'files'")
        if len(files) > limit:
            raise HTTPException(413, f"too many files: the limit is {limit} per upload")
        if sum(f.size or 0 for f in files) > state.settings.max_upload_bytes:
            raise HTTPException(413, f"upload too large: the limit is "
                                f"{state.settings.max_upload_bytes} bytes")
        start = time.perf_counter()
        items = [(f.filename or "unnamed", f.file) for f in files]
        try:
            result = await run_in_threadpool(
                ingest, state.store, items, limit, state.settings.max_upload_bytes)
        except UploadTooLargeError as exc:
            raise HTTPException(413, str(exc)) from exc
    finally:
        await form.close()
    if state.worker is not None:
        state.worker.wake()
    if not result.study_ids:
        what = (f"none of the {result.n_files} file(s) is a usable CT slice" if result.n_files
                else "the upload held no file to read")
        return JSONResponse(status_code=422, content={
            "detail": f"nothing stored: {what}", "errors": result.errors,
            "skipped": result.skipped})
    views.log_upload(result.study_ids, time.perf_counter() - start)
    return {"id": result.study_ids[0], "ids": result.study_ids, "files": result.n_files,
            "errors": result.errors, "existing": result.existing, "merged": result.merged,
            "skipped": result.skipped}


@router.get("/studies", summary="All studies, most suspicious first",
            response_model=list[StudySummary])
def list_studies(
    request: Request, q: str = "", status: str = "", flag: str = ""
) -> list[dict[str, Any]]:
    state = _state(request)
    _check_label(state, flag, "flag")
    return views.list_studies(state.store, q=q, status=status, flag=flag,
                              thresholds=state.thresholds())


@router.get("/studies/{study_id}", summary="Status, series, slices in order, probabilities",
            response_model=StudyDetail)
def get_study(request: Request, study_id: str) -> dict[str, Any]:
    state = _state(request)
    detail = _detail_or_404(state, study_id)
    detail["provenance"] = state.provenance()
    detail["notice"] = views.NOTICE
    return detail


@router.delete("/studies/{study_id}", summary="Delete a study, its files and results",
               response_model=Deleted)
def delete_study(request: Request, study_id: str) -> dict[str, str]:
    state = _state(request)
    if not state.store.delete_study(study_id):
        raise HTTPException(404, f"no study with id {study_id!r}")
    state.cache.drop(study_id)
    return {"deleted": study_id}


def _check_label(state: AppState, label: str, what: str) -> None:
    """400 unless ``label`` (when given) is one of the labels results are keyed by."""
    labels = state.labels()
    if label and label not in labels:
        raise HTTPException(400, f"unknown {what} {label!r}: use one of {', '.join(labels)}")


def _ready(state: AppState, study_id: str) -> dict[str, Any]:
    detail = _detail_or_404(state, study_id)
    if detail["status"] not in ("done", "partial"):
        raise HTTPException(409, f"results not ready: the study is {detail['status']} "
                            f"({detail['progress']:.0%} done); try again shortly")
    detail["provenance"] = state.provenance()
    detail["notice"] = views.NOTICE
    return detail


@router.get("/studies/{study_id}/results.json", summary="Results as JSON (download)",
            response_class=Response, responses={
                200: {"model": StudyDetail}, 409: {"model": ErrorBody}})
def results_json(request: Request, study_id: str) -> Response:
    import json

    detail = _ready(_state(request), study_id)
    return Response(json.dumps(detail, indent=1), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="ich-{study_id}.json"'})


@router.get("/studies/{study_id}/results.csv", summary="Per-slice results as CSV (download)",
            response_class=PlainTextResponse, responses={
                200: {"content": {"text/csv": {}}}, 409: {"model": ErrorBody}})
def results_csv(request: Request, study_id: str) -> Response:
    detail = _ready(_state(request), study_id)
    return Response(views.results_csv(detail), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="ich-{study_id}.csv"'})


def _slice(state: AppState, study_id: str, index: int) -> tuple[str, int, int]:
    found = views.locate_slice(state.store, study_id, index)
    if found is None:
        if views.study_detail(state.store, study_id) is None:
            raise HTTPException(404, f"no study with id {study_id!r}")
        raise HTTPException(404, f"study {study_id} has no slice {index}")
    return found


@router.get("/studies/{study_id}/slices/{index}.png", summary="One slice as PNG in a window",
            response_class=Response, responses={200: {"content": {"image/png": {}}}})
def slice_image(request: Request, study_id: str, index: int, window: str = "brain") -> Response:
    state = _state(request)
    try:
        center, width = parse_window(window)
    except WindowOutOfRangeError as exc:
        raise HTTPException(422, str(exc)) from exc
    except BadRequestError as exc:
        raise HTTPException(400, str(exc)) from exc
    series_id, pos, _ = _slice(state, study_id, index)

    def make() -> bytes:
        return slice_png(views.load_hu(state.store, series_id)[pos], center, width)

    png = state.cache.get_or_make((study_id, "slice", index, center, width), make)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/studies/{study_id}/slices/{index}/heatmap.png",
            summary="Where the model looked for a label (transparent PNG overlay)",
            response_class=Response, responses={
                200: {"content": {"image/png": {}}},
                409: {"model": ErrorBody, "description": "no model loaded"},
                503: {"model": ErrorBody, "description": "too many heatmaps waiting"}})
async def heatmap_image(
    request: Request, study_id: str, index: int, label: str = ""
) -> Response:
    """``label``: one of the run's labels; by default ``any``, or the run's first label."""
    state = _state(request)
    if label:
        _check_label(state, label, "label")
    else:
        labels = state.labels()
        label = triage_label(labels) or labels[0]
    key = (study_id, "heat", index, label)
    cached = state.cache.get(key)
    if cached is not None:
        return Response(cached, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})
    series_id, pos, n = await run_in_threadpool(_slice, state, study_id, index)
    predictor = state.predictor
    if predictor is None:
        raise HTTPException(409, "no model loaded yet, so no heatmap")

    def make() -> bytes:
        done = state.cache.get(key)  # made by a twin request that finished while this one queued
        if done is not None:
            return done
        try:
            hu = views.load_hu(state.store, series_id)
        except FileNotFoundError as exc:  # deleted while this request waited
            raise HTTPException(404, f"no study with id {study_id!r}") from exc
        neighbours = [
            np.asarray(hu[min(max(pos + o, 0), n - 1)], np.float32) for o in predictor.offsets]
        try:
            with state.model_lock:
                heat = predictor.heatmap(np.asarray(hu[pos], np.float32), label, neighbours)
        except Exception as exc:  # a model fault must read as one, not as a bare 500
            log.exception("heatmap failed for study %s slice %d", study_id, index)
            raise HTTPException(500, f"the model could not compute the heatmap "
                                f"({type(exc).__name__}: {exc})") from exc
        png = heatmap_png(heat)
        # Cached here, before the shared future completes: a request arriving just after it
        # finds the image instead of computing it again. Not for a study deleted meanwhile.
        if state.store.query("SELECT 1 FROM studies WHERE id=?", (study_id,)):
            state.cache.put(key, png)
        return png

    try:  # in the heatmap pool: a flood of these never takes the threads cheap requests use
        png = await state.heat_pool.run(key, make)
    except PoolBusyError as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/studies/{study_id}/slices/{index}/meta", summary="Header fields of one slice",
            response_model=SliceHeader)
def slice_header(request: Request, study_id: str, index: int) -> dict[str, Any]:
    state = _state(request)
    series_id, pos, _ = _slice(state, study_id, index)
    return views.slice_meta(state.store, series_id, pos)

