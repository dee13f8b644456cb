"""What the web views use of the app, and nothing else: the views never import `app`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agents.monitor import Monitor
    from agents.pipeline import Pipeline
    from ops.metrics import PipelineMetrics
    from ops.stats import PipelineStats
    from settings import Settings
    from sinks.outputs import Outputs
    from web.admission import Admission


class WebApp(Protocol):
    """The faust app as the views see it (app.PipelineApp is one)."""

    settings: Settings
    stats: PipelineStats
    metrics: PipelineMetrics
    outputs: Outputs
    pipeline: Pipeline
    observer: Monitor
    admission: Admission  # the turns of the /v1 requests (web/admission.py)
    conf: Any  # faust's settings: canonical_url
    http_client: Any  # faust's shared aiohttp session

    def page(self, path: str, *, name: str | None = None) -> Any: ...
