"""Browser-facing defences: Host allow-list, Origin check, security headers and the token login.

Why: a server on 127.0.0.1 is still reachable by every page the user's browser opens. A page on
another origin can POST studies unless writes check Origin/Referer, and a DNS-rebinding page
(``evil.example`` resolving to 127.0.0.1) can read everything unless the Host header is checked
against the names the server was bound to. The headers stop framing (clickjacking), MIME
sniffing, referrer leaks of study ids, and any script not served by the app itself.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from html import escape
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ich.web.settings import WILDCARD_HOSTS, WebSettings

TOKEN_COOKIE = "ich_token"
LOGIN_PATH = "/login"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Served without the token: the app's own code and styles (no patient data), so the token
#: entry page can be styled before anyone has logged in.
PUBLIC_PREFIXES = ("/static/", "/docs-assets/")

#: No inline script anywhere (the pages load /static/*.js); inline style attributes are allowed
#: because the probability bars are sized with them.
CSP = ("default-src 'self'; script-src 'self'; "
       "style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
       "worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer the browser sends "Origin: null" on the
    # login form's POST, indistinguishable from a sandboxed attacker page.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _host_name(value: str) -> str:
    """``Host``/netloc value without port, lower case, IPv6 brackets removed."""
    try:
        name = urlsplit(f"//{value}").hostname
    except ValueError:
        return ""
    return (name or "").lower()


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header names one of the allowed hosts (any port)."""
    return bool(host_header) and _host_name(host_header) in allowed


def _address(value: str) -> str | None:
    """An IP address in one canonical spelling (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def reached_address(host_header: str, request: Request) -> bool:
    """Whether the Host header is the very address this connection arrived at.

    Why this is enough for a server bound to all interfaces: the machine's addresses can change
    (DHCP, VPN) and listing them needs platform code, but a browser that typed an address sends
    it as Host, and a connection can only arrive at an address of this machine. DNS rebinding
    always sends a name, never an address, so it stays refused.
    """
    server = request.scope.get("server")
    here = _address(str(server[0])) if server else None
    return here is not None and _address(_host_name(host_header)) == here


def same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from this server's own pages.

    The Origin header (sent by browsers on every cross-origin and every POST request) must name
    the same scheme-less host and port as the Host header; without Origin, Referer is checked
    the same way. Requests carrying neither (curl, scripts) are not from a browser page and pass.
    """
    host = request.headers.get("host", "").lower()
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    if source == "null":
        return False
    try:
        netloc = urlsplit(source).netloc.lower()
    except ValueError:
        return False
    return netloc == host


def given_token(request: Request) -> tuple[str, bool]:
    """The token sent (Bearer header, ``?token=``, or the login cookie) and whether it came in
    the query string."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), False
    if "token" in request.query_params:
        return request.query_params["token"], True
    return request.cookies.get(TOKEN_COOKIE, ""), False


def token_ok(given: str, settings: WebSettings) -> bool:
    """Constant-time comparison with the configured token."""
    return settings.token is not None and hmac.compare_digest(
        given.encode(), settings.token.encode())


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def login_page(message: str = "", status: int = 401, next_path: str = "/") -> HTMLResponse:
    """The token entry form (no script: a plain POST to ``/login``)."""
    note = f'<p class="err">{escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ich — access token</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/app.css"></head>
<body class="login"><main class="login-box">
<h1>ich <span>head-CT hemorrhage triage</span></h1>
<p>This server requires an access token. Ask whoever started it
(<code>ich serve --token</code>).</p>
{note}<form method="post" action="{LOGIN_PATH}">
<input type="hidden" name="next" value="{escape(next_path)}">
<label>Access token <input id="token" name="token" type="password" autocomplete="current-password"
 required autofocus></label>
<button class="btn primary" type="submit">Open</button></form>
<p class="muted">Research use only — not for diagnosis.</p></main></body></html>"""
    return HTMLResponse(body, status_code=status, headers={"WWW-Authenticate": "Bearer"})


def _safe_next(value: str) -> str:
    """A local path to return to after login (never another site)."""
    return value if value.startswith("/") and not value.startswith("//") else "/"


def _set_cookie(response: Response, settings: WebSettings) -> None:
    assert settings.token is not None
    response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict",
                        secure=settings.tls, path="/")


def _without_token(request: Request) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


async def _login(request: Request, settings: WebSettings) -> Response:
    if request.method == "GET":
        if settings.token is None:
            return RedirectResponse("/", status_code=303)
        return login_page(status=200, next_path=_safe_next(request.query_params.get("next", "/")))
    form = await request.form()
    token, nxt = str(form.get("token", "")), _safe_next(str(form.get("next", "/")))
    if settings.token is None:
        return RedirectResponse(nxt, status_code=303)
    if not token_ok(token, settings):
        return login_page("That token is not right.", status=401, next_path=nxt)
    response = RedirectResponse(nxt, status_code=303)
    _set_cookie(response, settings)
    return response


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def install_security(app: FastAPI, settings: WebSettings) -> None:
    """Add the Host/Origin/token middleware and the security headers to ``app``."""
    allowed = settings.allowed_host_names()
    wildcard = settings.host in WILDCARD_HOSTS

    @app.middleware("http")
    async def security(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await _check(request, call_next)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if settings.tls:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    async def _check(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = request.headers.get("host", "")
        if not (host_allowed(host, allowed) or (wildcard and reached_address(host, request))):
            return _refuse(421, f"host {_host_name(host) or '(none)'!r} is not served here; "
                           "start the server with --allowed-host NAME to allow it")
        if request.method in STATE_CHANGING and not same_origin(request):
            return _refuse(403, "cross-origin request refused: writes must come from this "
                           "server's own pages")
        if request.url.path == LOGIN_PATH:
            return await _login(request, settings)
        if settings.token is None or (
                request.method == "GET" and request.url.path.startswith(PUBLIC_PREFIXES)):
            return await call_next(request)
        given, from_query = given_token(request)
        if not token_ok(given, settings):
            if _wants_html(request):
                return login_page(next_path=_safe_next(request.url.path))
            return JSONResponse(
                {"detail": "missing or wrong access token: send 'Authorization: Bearer "
                 "<token>', add ?token=<token>, or log in at /login"},
                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if from_query and _wants_html(request):
            # Keep the token out of the address bar and history: cookie, then a clean URL.
            response: Response = RedirectResponse(_without_token(request), status_code=303)
        else:
            response = await call_next(request)
        if from_query:
            _set_cookie(response, settings)
        return response
