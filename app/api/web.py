"""The web app: plain ES modules under app/web/, served at `/` by the service itself.

The page is built only on the public /v1 API (the same contract a third-party front-end
uses); nothing here is in the spec. Its assets are under /web/ (the library it draws charts
with is vendored in app/web/vendor/), so it loads nothing from another host and needs no
build step: `make serve` on a fresh clone serves it with Python alone."""

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
ASSETS_URL = "/web"
# Scripts, styles and API calls from this origin only; no framing.
POLICY = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class WebAssets(StaticFiles):
    """The app's files, each with the page's security headers; revalidated on every load
    (ETag), so an upgraded server never runs a stale module beside a new one."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(POLICY)
        return response


def add_web_app(app: FastAPI) -> None:
    """GET / (the page) and /web/* (its modules, styles and vendored libraries), outside the
    spec. Added after the API routers, so /v1, /docs and /healthz keep their own answers."""
    app.mount(ASSETS_URL, WebAssets(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    async def web_app(_: Request) -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers=POLICY)
