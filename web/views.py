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
    """What this worker consumed, dead-lettered, found late and exported."""

    async def get(self, request: web.Request) -> web.Response:
        stats = self.app.stats  # type: ignore[attr-defined]
        return self.json({
            "consumed_total": stats.total,
            "consumed_by_partition": {str(p): n for p, n in sorted(stats.consumed.items())},
            "input_offsets": {str(p): n for p, n in sorted(stats.input_offsets.items())},
            "dead_letters": stats.dead_letters,
            "late": stats.late,
            "frontier_ms": stats.frontier_ms,
            "windows_exported": stats.windows_exported,
            "rows_exported": stats.rows_exported,
            "sink_retries": stats.sink_retries,
            "archive_buffered": stats.archive_buffered,
            "export_delay_ms": {"p50": stats.delay_percentile_ms(0.5), "p99": stats.delay_percentile_ms(0.99),
                                "samples": len(stats.export_delays_ms)},
        })


@blueprint.route("/health/live", name="live")
class LiveView(web.View):
    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})


def register(app: PipelineApp) -> None:
    blueprint.register(app, url_prefix=API_PREFIX)
