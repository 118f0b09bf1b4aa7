"""The FastAPI application factory, its shared state, and ``preload`` for ``ich demo``.

Why a factory: tests, the benchmark and ``ich serve`` each build their own app on their own
data folder; nothing lives in module globals.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ich import __version__
from ich.errors import ConfigError
from ich.web.ingest import ingest
from ich.web.jobs import Worker
from ich.web.predictor import PredictorLike, load_predictor, triage_label
from ich.web.render import PngCache, heatmap_png
from ich.web.routes_api import router as api_router
from ich.web.routes_docs import install_docs
from ich.web.routes_pages import router as pages_router
from ich.web.security import install_security
from ich.web.settings import WebSettings
from ich.web.state import AppState
from ich.web.store import Store

log = logging.getLogger("ich.web")
STATIC = Path(__file__).parent / "static"


def _load_model(state: AppState) -> None:
    """Build the real predictor once (runs in a thread so pages are served meanwhile).

    The predictor is published (``model_ready``) only after its first heatmap has been made,
    so neither the first job nor the first heatmap request pays Grad-CAM's first-call set-up.
    """
    try:
        predictor = load_predictor(state.settings.model_dir, state.settings.device)
        log.info("model loaded from %s", state.settings.model_dir)
        warm_heatmap(predictor)
        state.warmed.set()
        state.predictor = predictor
    except Exception as exc:
        state.predictor_error = f"{type(exc).__name__}: {exc}"
        log.error("could not load the model: %s", state.predictor_error)
    if state.worker is not None:
        state.worker.wake()


def warm_heatmap(predictor: PredictorLike) -> None:
    """One heatmap on a synthetic head, encoded as the route encodes it, so that the first
    real request does not pay for first-call set-up (kernels, allocator, the model's eval
    switch and layer lookup, Pillow's PNG plugin: ~0.1 s on a busy machine). Failures are
    logged only: real requests report their own."""
    import numpy as np

    yy, xx = np.mgrid[-256:256, -256:256]
    head = np.where(xx**2 + yy**2 < 200**2, 35.0, -1000.0).astype(np.float32)
    try:
        label = triage_label(predictor.labels) or predictor.labels[0]
        heatmap_png(predictor.heatmap(head, label, [head for _ in predictor.offsets]))
    except Exception:  # a failing warm-up must not stop the server
        log.exception("heatmap warm-up failed")


def warm_up(state: AppState) -> None:
    """:func:`warm_heatmap` in the heatmap pool, under the model lock, for a predictor handed
    to :func:`create_app` ready-made; sets ``state.warmed`` when done."""
    predictor = state.predictor
    if predictor is None:
        return

    def run() -> bytes:
        try:
            with state.model_lock:
                warm_heatmap(predictor)
        finally:
            state.warmed.set()
        return b""

    state.heat_pool.submit(("warm-up",), run)


def _install_guards(app: FastAPI, settings: WebSettings) -> None:
    """Body size limit, JSON errors people can read, then (outermost) the security checks."""

    @app.middleware("http")
    async def size_limit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes:
            return JSONResponse({"detail": f"upload too large: the limit is "
                                 f"{settings.max_upload_bytes / 2**20:.0f} MiB"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                 for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    install_security(app, settings)  # added last, so it runs first on every request


def create_app(settings: WebSettings, predictor: PredictorLike | None = None) -> FastAPI:
    """Build the application on ``settings.data_dir``.

    Args:
        settings: Where data lives, limits, token, and the model run to load.
        predictor: Any object satisfying ``PredictorLike``; when None and ``settings.model_dir``
            is set, ``ich.inference.Predictor.from_run`` is built in the background at startup.
    """
    settings.validate()
    state = AppState(settings=settings, store=Store(settings.data_dir),
                     cache=PngCache(settings.png_cache_items), predictor=predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        removed = state.store.sweep()  # before any upload: files no row references
        if removed:
            log.info("startup sweep removed %d unreferenced file(s)", removed)
        if settings.start_worker:
            state.worker = Worker(state.store, state.get_predictor, state.model_lock)
            state.worker.start()
        if state.predictor is None and settings.model_dir is not None:
            threading.Thread(target=_load_model, args=(state,), daemon=True).start()
        else:
            warm_up(state)
        yield
        if state.worker is not None:
            state.worker.stop()
        state.heat_pool.shutdown()

    app = FastAPI(
        title="ich — intracranial hemorrhage triage",
        version=__version__,
        description="Research use only — not for diagnosis. Upload head-CT DICOM, get per-slice "
        "and per-study probabilities of the loaded run's labels (the five hemorrhage subtypes "
        "and 'any', or the run's own label set: see /api/info), and heatmaps.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ich = state
    _install_guards(app, settings)
    app.include_router(api_router)
    app.include_router(pages_router)
    install_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def preload(settings: WebSettings, paths: Iterable[Path]) -> list[str]:
    """Ingest DICOM files or folders into the data dir before serving (used by ``ich demo``).

    The jobs are queued and run as soon as a server with a model starts on the same folder.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    def opened() -> Iterator[tuple[str, IO[bytes]]]:
        for f in files:  # one open file at a time: ingest copies each before asking for the next
            with open(f, "rb") as fh:
                yield f.name, fh

    store = Store(settings.data_dir)
    try:
        result = ingest(store, opened(), max_files=max(settings.max_files, len(files)),
                        max_bytes=max(settings.max_upload_bytes, 1))
    finally:
        store.close()
    return result.study_ids


def serve(settings: WebSettings, predictor: PredictorLike | None = None) -> None:
    """Run uvicorn on ``settings.host:port`` until interrupted (what ``ich serve`` calls)."""
    import uvicorn

    settings.validate()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_patient_data_logs()
    if predictor is None and settings.model_dir is not None:
        predictor = load_model_or_fail(settings)
        warm_heatmap(predictor)  # before binding: the first heatmap request finds it warm
    app = create_app(settings, predictor)
    scheme = "https" if settings.tls else "http"
    print(f"ich: serving on {scheme}://{settings.host}:{settings.port}/  (data in "
          f"{settings.data_dir}; research use only — not for diagnosis)", flush=True)
    # No access log: URLs carry search text and ?token=, which must not reach log files.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
                ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None)


def load_model_or_fail(settings: WebSettings) -> PredictorLike:
    """Load ``settings.model_dir`` before binding, or raise a ConfigError that says why.

    Why before binding: a server whose model never loads accepts studies that stay "queued"
    forever; refusing to start tells the person who typed ``--model`` at once.

    Raises:
        ConfigError: the path is missing or holds no trained run.
    """
    dirs = settings.model_dir if isinstance(settings.model_dir, list) else [settings.model_dir]
    for d in dirs:
        if d is None or not Path(d).exists():
            raise ConfigError(f"{d}: --model path does not exist")
    try:
        return load_predictor(settings.model_dir, settings.device)
    except Exception as exc:  # any failure to build the model means: nothing to serve
        raise ConfigError(f"{', '.join(map(str, dirs))}: no trained run could be loaded "
                          f"({type(exc).__name__}: {exc})") from exc


def quiet_patient_data_logs() -> None:
    """Silence pydicom's header warnings, which quote UIDs (identifiers must not be logged)."""
    import warnings

    warnings.filterwarnings("ignore", module="pydicom")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
