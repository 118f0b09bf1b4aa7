"""The single-page viewer: one HTML shell for the worklist and the study view.

Why one page: the worklist and viewer share the header (notice, provenance, upload) and all
data comes from the JSON API, so there is no server-side templating and no build step.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).parent / "templates"


@cache
def _shell() -> str:
    return (TEMPLATES / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def worklist_page() -> HTMLResponse:
    """The worklist (and upload area)."""
    return HTMLResponse(_shell())


@router.get("/study/{study_id}", response_class=HTMLResponse)
def study_page(study_id: str) -> HTMLResponse:
    """The viewer of one study (the same shell; the script reads the id from the URL)."""
    return HTMLResponse(_shell())
