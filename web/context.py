"""What the web views use of the app, and nothing else: the views never import `app`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from metrics import PipelineMetrics
    from monitor import Monitor
    from pipeline import Pipeline
    from settings import Settings
    from sinks.outputs import Outputs
    from stats import PipelineStats


class WebApp(Protocol):
    """The faust app as the views see it (app.PipelineApp is one)."""

    settings: Settings
    stats: PipelineStats
    metrics: PipelineMetrics
    outputs: Outputs
    pipeline: Pipeline
    observer: Monitor
    conf: Any  # faust's settings: canonical_url
    http_client: Any  # faust's shared aiohttp session

    def page(self, path: str, *, name: str | None = None) -> Any: ...
