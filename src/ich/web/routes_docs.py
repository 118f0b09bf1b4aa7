"""``/docs`` (Swagger UI) and ``/redoc`` served entirely by the app: no CDN.

Why: FastAPI's default pages load their scripts from a public CDN, so on a hospital network
without internet the API docs are blank, and every visit tells a third party that the server
exists. The assets come from the ``fastapi-offline`` wheel (Swagger UI: Apache-2.0, ReDoc:
MIT); the Swagger UI start-up lives in ``static/docs.js`` because the pages allow no inline
script (see ``ich.web.security.CSP``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    """The folder of ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs", response_class=HTMLResponse)
def swagger_page() -> HTMLResponse:
    """Interactive API docs (Swagger UI) from local assets."""
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ich API — Swagger UI</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script></body></html>""")


@router.get("/redoc", response_class=HTMLResponse)
def redoc_page() -> HTMLResponse:
    """Readable API reference (ReDoc) from local assets."""
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ich API — ReDoc</title>
<link rel="icon" href="data:,"></head>
<body><redoc spec-url="/openapi.json" hide-download-button></redoc>
<script src="{ASSETS_URL}/redoc.standalone.js"></script></body></html>""")


def install_docs(app: FastAPI) -> None:
    """Add the two pages and their asset folder to ``app`` (created with ``docs_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
