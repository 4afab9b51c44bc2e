"""The web app's files: served at / and /web/ outside the spec, shipped in the wheel, calling
only the public /v1 API, with the vendored chart library as recorded. (The app itself is
driven in a browser by tests/e2e/test_web_app.py.)"""

import hashlib
import json
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from fastapi.testclient import TestClient

from app.api.web import WEB_DIR

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((WEB_DIR / "js").glob("*.js"))


def test_the_page_is_served_at_the_root_with_its_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="web/js/main.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe" not in policy  # no inline or eval'd script, no other host


def test_every_module_and_the_chart_library_are_served(client: TestClient) -> None:
    served = ["web/app.css", "web/vendor/chart.umd.min.js"]
    served += [f"web/js/{path.name}" for path in MODULES]
    for path in served:
        answer = client.get(f"/{path}")
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"], path
        kind = "text/css" if path.endswith(".css") else "javascript"
        assert kind in answer.headers["content-type"], path
    # Every relative import of every module names a served file.
    for module in MODULES:
        for imported in re.findall(r'from "\./([a-z]+\.js)"', module.read_text()):
            assert (WEB_DIR / "js" / imported).is_file(), (module.name, imported)


def test_the_app_stays_out_of_the_spec_and_the_api_keeps_its_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert not [p for p in spec["paths"] if p == "/" or p.startswith("/web")]
    missing = client.get("/web/nothing-here.js")
    assert missing.status_code == 404
    unknown = client.post("/v1/nothing-here")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert client.post("/").status_code == 405


def test_the_app_calls_only_operations_of_the_public_spec() -> None:
    """Every API path the modules name is a /v1 path of the committed spec (an interpolated
    `${...}` stands for one path segment, or for a prefix built from one)."""
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    patterns = [
        re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path.lstrip("/")) + "(/.*)?$")
        for path in spec["paths"]
        if path.startswith("/v1/")
    ]
    named = set()
    for path in MODULES:
        source = path.read_text()
        named |= set(re.findall(r"[`\"](v1/[^`\"?]*)", source))
        # Paths built on a module's own base path (`${base}/stats`).
        bases = dict(re.findall(r"(this\.base|base) = `(v1/[^`]*)`", source))
        for name, tail in re.findall(r"`\$\{(this\.base|base)\}(/[^`]*)`", source):
            named.add(bases[name] + tail)
    assert len(named) >= 20
    for path in named:
        concrete = re.sub(r"\$\{[^}]+\}", "1", path)
        assert any(p.match(concrete) for p in patterns), path


def test_the_wheel_ships_every_file_of_the_app() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["app"]
    files = [p.relative_to(WEB_DIR.parent).as_posix() for p in WEB_DIR.rglob("*") if p.is_file()]
    assert "web/index.html" in files
    assert [f for f in files if not any(fnmatch(f, g) for g in globs)] == []


def test_vendored_libraries_are_the_recorded_releases() -> None:
    for folder in (WEB_DIR / "vendor", ROOT / "tests" / "e2e" / "vendor"):
        table = (folder / "README.md").read_text()
        rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", table, flags=re.M)
        assert rows, folder
        for name, digest in rows:
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        assert list(folder.glob("*LICENSE*")), folder
