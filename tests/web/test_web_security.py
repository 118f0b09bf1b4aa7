"""Issue 11 point 2: Host allow-list, Origin check, security headers, token login, TLS settings,
and point 5: the API docs load nothing from outside the app."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from web_helpers import LOCAL

from ich.errors import ConfigError
from ich.web.settings import WebSettings


def test_rebinding_host_is_refused_and_allow_list_extends(make_client) -> None:
    client = make_client()
    assert client.get("/api/info").status_code == 200
    for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host
    r = client.get("/api/studies", headers={"host": "evil.example:8000"})
    assert r.status_code == 421 and "evil.example" in r.json()["detail"]
    extra = make_client(allowed_hosts=["ct-triage.hospital.org"])
    assert extra.get("/api/info", headers={"host": "ct-triage.hospital.org"}).status_code == 200
    assert extra.get("/api/info", headers={"host": "evil.example"}).status_code == 421


def test_cross_origin_writes_refused(make_client, tiny_cohort: Path) -> None:
    client = make_client()
    dcm = sorted((tiny_cohort / "images").glob("*.dcm"))[0]
    files = [("files", (dcm.name, dcm.read_bytes(), "application/dicom"))]
    r = client.post("/api/studies", files=files, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    r = client.post("/api/studies", files=files,
                    headers={"referer": "http://evil.example/page"})
    assert r.status_code == 403
    r = client.post("/api/studies", files=files, headers={"origin": "null"})
    assert r.status_code == 403
    assert client.get("/api/studies").json() == []
    r = client.post("/api/studies", files=files, headers={"origin": LOCAL})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = client.delete(f"/api/studies/{sid}", headers={"origin": "http://127.0.0.1:9999"})
    assert r.status_code == 403 and client.get(f"/api/studies/{sid}").status_code == 200


def test_security_headers_on_pages_api_and_errors(make_client) -> None:
    client = make_client()
    for url in ("/", "/api/info", "/api/studies/nope", "/static/app.js", "/docs"):
        h = client.get(url).headers
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1]\
            .split(";")[0], url
        assert "frame-ancestors 'none'" in csp and h["x-frame-options"] == "DENY"
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "same-origin"
    html = client.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script in the page"


def test_token_entry_page_and_token_out_of_the_address_bar(make_client) -> None:
    client = make_client(token="s3cret")
    r = client.get("/", headers={"accept": "text/html"})
    assert r.status_code == 401 and "<form" in r.text and 'name="token"' in r.text
    assert client.get("/api/info").status_code == 401  # JSON clients still get JSON
    assert client.get("/static/app.css").status_code == 200  # the login page's own style
    assert client.get("/api/studies").status_code == 401
    r = client.post("/login", data={"token": "wrong", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "not right" in r.text
    r = client.post("/login", data={"token": "s3cret", "next": "//evil.example"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "ich_token" in r.headers["set-cookie"] and "httponly" in r.headers["set-cookie"].lower()
    assert client.get("/api/info").status_code == 200  # the cookie now authenticates
    fresh = make_client(token="s3cret")
    r = fresh.get("/study/abc?token=s3cret&x=1", headers={"accept": "text/html"},
                  follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/study/abc?x=1"
    assert "ich_token" in r.headers["set-cookie"]
    r = fresh.post("/login", data={"token": "s3cret"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403  # login CSRF


def test_tls_settings_and_serve_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="both"):
        WebSettings(data_dir=tmp_path, ssl_certfile=tmp_path / "c.pem").validate()
    with pytest.raises(ConfigError, match="not found"):
        WebSettings(data_dir=tmp_path, ssl_certfile=tmp_path / "c.pem",
                    ssl_keyfile=tmp_path / "k.pem").validate()
    from ich.cli import main

    seen: dict[str, WebSettings] = {}
    monkeypatch.setattr("ich.web.app.serve", lambda s, *a: seen.setdefault("s", s))
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    assert main(["serve", "--data", str(tmp_path), "--allowed-host", "ct.example",
                 "--ssl-certfile", str(tmp_path / "c.pem"),
                 "--ssl-keyfile", str(tmp_path / "k.pem")]) == 0
    s = seen["s"]
    names = s.allowed_host_names()
    assert s.tls and "ct.example" in names and "127.0.0.1" in names


def test_serve_with_a_path_holding_no_run_exits_nonzero(tmp_path: Path, capsys) -> None:
    from ich.cli import main

    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert main(["serve", "--data", str(tmp_path / "d"), "--model", str(empty)]) != 0
    assert "no trained run" in capsys.readouterr().err
    assert main(["serve", "--data", str(tmp_path / "d"), "--model", str(tmp_path / "nope")]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_docs_and_redoc_are_served_offline(make_client) -> None:
    client = make_client()
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
        assert urls and all(u.startswith("/") or u.startswith("data:") for u in urls), urls
        assert "http://" not in html and "https://" not in html
        for u in urls:
            if u.startswith("/"):
                assert client.get(u).status_code == 200, u


def test_redoc_script_requests_nothing_outside(make_client) -> None:
    """ReDoc's side menu shows a logo fetched from cdn.redoc.ly (blocked by the CSP, but still
    a request attempt and a console error); the served script has it replaced."""
    client = make_client()
    r = client.get("/docs-assets/redoc.standalone.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert len(r.text) > 500_000 and "createElement" in r.text  # still the whole ReDoc bundle
    assert "cdn.redoc.ly" not in r.text
    assert not re.search(r"""src:\s*["']https?://""", r.text)  # no image/script from outside
    assert 'src:"data:,"' in r.text  # the logo: an empty inline image, hidden by its onError


@pytest.mark.net
def test_https_serves_with_secure_cookie(tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess

    import httpx
    from web_helpers import FakePredictor, free_port, serving

    from ich.web.app import create_app

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port = free_port()
    settings = WebSettings(data_dir=tmp_path / "d", port=port, token="tok",
                           ssl_certfile=cert, ssl_keyfile=key)
    settings.validate()
    with serving(create_app(settings, FakePredictor()), port, ssl_certfile=str(cert),
                 ssl_keyfile=str(key)):
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        with httpx.Client(base_url=f"https://localhost:{port}", verify=ctx) as c:
            r = c.post("/login", data={"token": "tok"}, follow_redirects=False)
            assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
            assert "max-age" in r.headers.get("strict-transport-security", "")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not answered on that port
            httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=5)


@pytest.mark.net
def test_bound_to_all_interfaces_answers_the_address_it_was_reached_at(tmp_path: Path) -> None:
    """Bound to 0.0.0.0, a browser that typed one of the machine's addresses gets the app;
    a DNS name (rebinding) or an address the connection did not arrive at gets 421."""

    import httpx
    from web_helpers import FakePredictor, free_port, serving

    from ich.web.app import create_app

    port = free_port()
    settings = WebSettings(data_dir=tmp_path / "d", host="0.0.0.0", port=port, token="tok")
    auth = {"authorization": "Bearer tok"}
    with serving(create_app(settings, FakePredictor()), port, host="0.0.0.0"):
        # 127.0.0.2 reaches this machine through the wildcard bind (Linux routes 127/8 to lo)
        # but is in no name list: only the connection's own local address can allow it.
        url = f"http://127.0.0.2:{port}/api/info"
        assert httpx.get(url, headers=auth).status_code == 200
        for host in ("evil.example", f"10.11.12.13:{port}", "127.0.0.3"):
            r = httpx.get(url, headers={**auth, "host": host})
            assert r.status_code == 421, host
