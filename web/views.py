"""JSON views under a versioned prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faust import web

if TYPE_CHECKING:
    from app import PipelineApp

API_PREFIX = "/v1"
blueprint = web.Blueprint("pipeline")


@blueprint.route("/status", name="status")
class StatusView(web.View):
    """What this worker consumed, per input partition."""

    async def get(self, request: web.Request) -> web.Response:
        stats = self.app.stats  # type: ignore[attr-defined]
        return self.json({
            "consumed_total": stats.total,
            "consumed_by_partition": {str(p): n for p, n in sorted(stats.consumed.items())},
        })


@blueprint.route("/health/live", name="live")
class LiveView(web.View):
    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})


def register(app: PipelineApp) -> None:
    blueprint.register(app, url_prefix=API_PREFIX)
