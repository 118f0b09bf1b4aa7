"""``/docs`` (Swagger UI) and ``/redoc`` served entirely by the app: no CDN.

Why: FastAPI's default pages load their scripts from a public CDN, so on a hospital network
without internet the API docs are blank, and every visit tells a third party that the server
exists. The assets come from the ``fastapi-offline`` wheel (Swagger UI: Apache-2.0, ReDoc:
MIT); the Swagger UI start-up lives in ``static/docs.js`` because the pages allow no inline
script (see ``ich.web.security.CSP``), and ReDoc's script is served with its one external
image (a logo) removed, so neither page makes any request outside the app.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from ich.errors import ConfigError

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


#: The one asset ReDoc fetches from outside: the logo in its side-menu footer.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@functools.cache
def redoc_script() -> str:
    """``redoc.standalone.js`` with the footer logo made an empty inline image.

    Why: ReDoc has no option to hide that logo, and its ``<img>`` asks cdn.redoc.ly for it on
    every visit (blocked by the CSP, but still an attempt to reach a third party and a console
    error). With ``data:,`` the image fails at once and ReDoc's own ``onError`` removes it, as
    it does offline. Raises ``ConfigError`` if a ReDoc update moved the URL (the test says so).
    """
    text = (assets_dir() / "redoc.standalone.js").read_text(encoding="utf-8")
    if REDOC_LOGO not in text:
        raise ConfigError(f"{assets_dir()}/redoc.standalone.js: the ReDoc logo URL moved; "
                          "update ich.web.routes_docs")
    return text.replace(REDOC_LOGO, "data:,")


@router.get(f"{ASSETS_URL}/redoc.standalone.js")
def redoc_js() -> Response:
    """ReDoc's script without its one external request (see :func:`redoc_script`)."""
    return Response(redoc_script(), media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=86400"})


def install_docs(app: FastAPI) -> None:
    """Add the two pages and their asset folder to ``app`` (created with ``docs_url=None``);
    the router comes first, so its ReDoc script is served instead of the folder's."""
    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
