"""The live dashboard at `/`: one HTML page, its script and stylesheet, and vendored uPlot.

Each asset is a route of its own with a fixed file and content type, read once when the
app is built: nothing on disk is reached from a request path, and no directory is listed.
The page reads only the JSON API under /v1 (web/views.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from faust import web

if TYPE_CHECKING:
    from web.context import WebApp

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page runs only its own files and talks only to this server; event types are
# untrusted text, so this is the backstop should one ever reach the DOM as markup.
# uPlot sets element styles from script, which style-src does not restrict.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True, slots=True)
class Asset:
    url: str
    file: str  # relative to STATIC_DIR
    content_type: str


ASSETS = (
    Asset("/", "index.html", "text/html; charset=utf-8"),
    Asset("/static/dashboard.js", "dashboard.js", "text/javascript; charset=utf-8"),
    Asset("/static/dashboard.css", "dashboard.css", "text/css; charset=utf-8"),
    Asset("/static/vendor/uPlot.iife.min.js", "vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    Asset("/static/vendor/uPlot.min.css", "vendor/uPlot.min.css", "text/css; charset=utf-8"),
)


def _headers(content_type: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        # The assets change with the code; a restarted worker must not serve a stale script.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    }


def _asset_view(body: bytes, content_type: str) -> type[web.View]:
    headers = _headers(content_type)

    class AssetView(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.bytes(body, headers=dict(headers))

    return AssetView


def register(app: WebApp) -> None:
    """Serve the dashboard's files; must run before faust's own index is mounted at `/` (first route wins)."""
    for asset in ASSETS:
        body = (STATIC_DIR / asset.file).read_bytes()
        app.page(asset.url, name=f"dashboard:{asset.file}")(_asset_view(body, asset.content_type))
