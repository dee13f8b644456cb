"""The web API: JSON under a versioned prefix, health, and Prometheus metrics.

Every answer about windows carries the watermark and how fresh it is. Open windows live
in the stage-2 state of whichever worker owns their key; closed ones in Redis, which
every worker can read:

- `/v1/windows/{window}/open` gathers the open windows from every worker of the group;
- `/v1/windows/{window}/value` is answered by the worker that owns the key, or routed to it;
- `/v1/windows/{window}/closed` reads the latest closed windows from Redis;
- `/v1/alerts` reads the alerts firing now and the recent ones from Redis;
- `/v1/rollups/{hourly|daily}` reads the batch layer's rollups of a range from the lake;
- `/v1/aggregations` lists a spec's aggregations, `/v1/aggregations/{aggregation}/{window}/closed`
  reads one key's latest closed windows from Redis, `.../open` its open ones from its owner, and
  `.../top` ranks a closed window's keys by a measure, from the lake.

Errors are JSON, `{"error": {"status": 404, "message": "..."}}`: 400 for a bad
parameter, 404 for an unknown name, 503 while the worker is not ready.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import orjson
from faust import web
from faust.web import exceptions
from yarl import URL

from agents.monitor import not_ready_reasons
from formats.aggregates import aggregate_row_to_api
from formats.batch import aggregate_rollup_to_api, rollup_to_api
from formats.events import iso_utc
from formats.partials import PartialKey, key_partition, key_text, partial_partition
from formats.rows import WindowRow, row_to_api
from ops.metrics import CONTENT_TYPE_LATEST
from sinks.outputs import ReadsBusyError
from sinks.policy import SinkConfigurationError, SinkUnavailableError
from sinks.redis_store import MAX_RECENT_ALERTS
from tables.windows import first_open_start, is_closed
from web.params import (
    BadParameterError,
    UnknownNameError,
    aggregation_to_api,
    find_aggregation,
    find_aggregation_window,
    find_window,
    page_cursor,
    parse_after,
    parse_event_type,
    parse_key,
    parse_key_filter,
    parse_limit,
    parse_measure,
    parse_order,
    parse_rollup_range,
    parse_start,
    request_host,
    watermark_json,
)

if TYPE_CHECKING:
    from tables.windows import WindowSpec
    from web.context import WebApp

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
# A peer that takes longer than this to list its open windows is reported as missing:
# the dashboard polls every 2 s and should not hang on one slow worker.
PEER_TIMEOUT_S = 2.0
# Event types listed by /closed without an event_type (the most recently active ones).
MAX_LISTED_TYPES = 50
HOP_PARAM = "hop"  # set on routed requests, so stale routing metadata cannot loop

blueprint = web.Blueprint("pipeline")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ApiView(web.View):
    """JSON errors for every failure, including faust's own (405 and others)."""

    app: WebApp

    def get_methods(self) -> set[str]:
        # Route every method here, so an unsupported one gets faust's MethodNotAllowed as a
        # JSON 405 (below) instead of aiohttp's plain-text page.
        return {"HEAD", "GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS"}

    #: Readable without WEB_AUTH_TOKEN: health probes and Prometheus must not need it.
    open_to_all = False
    #: Served at WEB_RATE_LIMIT a second (web/admission.py). Not the answers from memory that monitors poll
    #: (health, /metrics, /v1/status): a probe must never wait its turn behind a client reading the stores.
    counted = True

    async def dispatch(self, request: Any) -> Any:
        settings = self.app.settings.web
        if not settings.auth_token:
            host = request_host(request.headers.get("Host"))
            if host is not None and not settings.allowed_hosts.matches(host):
                # A name this worker was not configured under: a page elsewhere reaching a loopback or private
                # API through a DNS name it rebinds (with a token, the token stops it).
                return self.api_error(421, f"this worker does not answer to the host {host[:64]!r}: use its "
                                           "address, or add the name to WEB_ALLOWED_HOSTS")
        if not self.open_to_all and not authorized(settings.auth_token, request.headers):
            response = self.api_error(401, "this endpoint needs the header 'Authorization: Bearer <WEB_AUTH_TOKEN>'")
            response.headers["WWW-Authenticate"] = 'Bearer realm="pipeline"'
            return response
        if self.counted and not self.open_to_all:
            wait_s = self.app.admission.reserve()
            if wait_s is None:
                return self.busy(f"more than {settings.rate_limit} requests a second (WEB_RATE_LIMIT); try again "
                                 "shortly")
            if wait_s:
                await asyncio.sleep(wait_s)
        try:
            return await super().dispatch(request)
        except BadParameterError as exc:
            return self.api_error(400, str(exc))
        except UnknownNameError as exc:
            return self.api_error(404, str(exc))
        except ReadsBusyError as exc:
            return self.busy(str(exc))
        except (SinkUnavailableError, SinkConfigurationError) as exc:
            return self.api_error(503, f"store unavailable: {exc}")

    async def on_request_error(self, request: web.Request, exc: exceptions.WebError) -> web.Response:
        return self.api_error(int(exc.code), str(exc.detail))

    def api_error(self, status: int, message: str) -> web.Response:
        return self.json({"error": {"status": status, "message": message}}, status=status)

    def busy(self, why: str) -> web.Response:
        """503 with Retry-After: a turn or a reader thread will be free in a moment."""
        response = self.api_error(503, f"busy: {why}")
        response.headers["Retry-After"] = "1"
        return response

    def require_ready(self) -> None:
        reasons = not_ready_reasons(self.app)
        if reasons:
            raise exceptions.ServiceUnavailable(f"worker not ready: {'; '.join(reasons)}")

    async def route(self, request: web.Request, owner: URL) -> web.Response:
        """The answer of the worker that owns the key asked for (one hop: it answers from its own state)."""
        refused = peer_refused(self.app, owner)
        if refused:
            raise exceptions.ServiceUnavailable(f"owner {owner} of this key: {refused}")
        target = owner.with_path(request.url.path).with_query({**request.query, HOP_PARAM: "1"})
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S * 2)
        try:
            async with self.app.http_client.get(target, timeout=timeout, headers=peer_headers(self.app)) as response:
                body = await response.text()
                return self.text(body, content_type="application/json", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise exceptions.ServiceUnavailable(f"owner {owner} of this key did not answer: {exc!r}") from None

    def watermark(self) -> dict[str, Any]:
        app = self.app
        stats = app.stats
        now_ms = _now_ms()
        low_ms, advanced_at = stats.low_frontier_ms, stats.low_frontier_advanced_at_ms
        return watermark_json(low_ms, advanced_at, now_ms, partition_watermarks(app, now_ms))

    def window(self, name: str) -> WindowSpec:
        return find_window(self.app.settings.pipeline.windows, name)


def authorized(token: str, headers: Mapping[str, str]) -> bool:
    """True without a token configured, else when the request carries it (compared in constant time)."""
    if not token:
        return True
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def peer_refused(app: WebApp, url: URL) -> str | None:
    """Why this worker will not send its token to the worker at `url` (None: it may)."""
    settings = app.settings.web
    if settings.auth_token and not settings.peer_hosts.matches(url.host):
        return (f"{url.host!r} is not in WEB_PEER_HOSTS, and this worker sends its WEB_AUTH_TOKEN only to the workers "
                "listed there")
    return None


def peer_headers(app: WebApp) -> dict[str, str]:
    """Headers of a request to another worker of the group (routed lookups, gathered lists)."""
    token = app.settings.web.auth_token
    return {"Authorization": f"Bearer {token}"} if token else {}


def partition_watermarks(app: WebApp, now_ms: int) -> dict[int, int]:
    """Watermark of each input partition this worker ingests (None before its first event is left out)."""
    marks = {}
    for partition, part in sorted(app.pipeline.ingest.partitions.items()):
        watermark = part.clock.mark(now_ms).watermark_ms
        if watermark is not None:
            marks[partition] = watermark
    return marks


@blueprint.route("/status", name="status")
class StatusView(ApiView):
    """What this worker consumed, dead-lettered, found late and exported."""

    counted = False

    async def get(self, request: web.Request) -> web.Response:
        app = self.app
        stats = app.stats
        pipeline = app.pipeline
        lag = {str(p): n for p, n in sorted(pipeline.ingest_runner.lag().items())}
        return self.json({
            "worker": str(app.conf.canonical_url),
            # Web URLs several workers advertise: WEB_HOST is not set apart on each, and routing misses keys.
            "duplicate_worker_urls": sorted(set(pipeline.export_runner.duplicate_urls())
                                            | set(pipeline.ingest_runner.duplicate_urls())),
            "assigned": {"events": list(pipeline.ingest_runner.assigned),
                         "partials": list(pipeline.export_runner.assigned)},
            "consumed_total": stats.total,
            "consumed_by_partition": {str(p): n for p, n in sorted(stats.consumed.items())},
            "input_offsets": {str(p): n for p, n in sorted(stats.input_offsets.items())},
            "lag_by_partition": lag,
            "dead_letters": stats.dead_letters,
            "late": stats.late,
            "frontier_ms": stats.frontier_over(pipeline.ingest_runner.assigned),
            "frontiers_ms": {str(p): ms for p, ms in sorted(stats.frontiers_ms.items())},
            "watermark": self.watermark(),
            "windows_exported": stats.windows_exported,
            "rows_exported": stats.rows_exported,
            "sink_retries": stats.sink_retries,
            "archive_buffered": sum(stats.archive_buffered.values()),
            "export_delay_ms": {"p50": stats.delay_percentile_ms(0.5), "p99": stats.delay_percentile_ms(0.99),
                                "samples": len(stats.export_delays_ms)},
        })


@blueprint.route("/health/live", name="live")
class LiveView(ApiView):
    open_to_all = True

    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})


@blueprint.route("/health/ready", name="ready")
class ReadyView(ApiView):
    """200 once partitions are assigned and tables recovered; 503 with the reasons before."""

    open_to_all = True

    async def get(self, request: web.Request) -> web.Response:
        reasons = not_ready_reasons(self.app)
        if reasons:
            return self.json({"status": "not ready", "reasons": reasons,
                              "error": {"status": 503, "message": "; ".join(reasons)}}, status=503)
        return self.json({"status": "ready"})


@blueprint.route("/windows", name="windows")
class WindowsView(ApiView):
    async def get(self, request: web.Request) -> web.Response:
        windows = [{"name": w.name, "size_ms": w.size_ms, "advance_ms": w.step_ms}
                   for w in self.app.settings.pipeline.windows]
        return self.json({"windows": windows, "watermark": self.watermark()})


OPEN_ROWS: Final = 1_000  # open rows a request answers by default
MAX_OPEN_ROWS: Final = 10_000  # and at most: the next page starts `after` the last row (the answer's `next`)


def page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """`open`, the first `limit` of these rows (in page order), and `next`, the `after` of the page that
    follows when there are more (None on the last)."""
    last = rows[limit - 1] if len(rows) > limit else None
    return {"open": rows[:limit],
            "next": None if last is None else page_cursor(last["window_start_ms"], last["event_type"])}


@blueprint.route("/windows/{window}/open", name="open-windows")
class OpenWindowsView(ApiView):
    """Open windows and their current values, from every worker (`scope=local`: this one only), by start
    then event type: at most `limit`, and `next` (when there are more) is the `after` of the next page."""

    async def get(self, request: web.Request, window: str) -> web.Response:
        spec = self.window(window)
        event_type = parse_event_type(request.query, required=False)
        scope = request.query.get("scope", "group")
        if scope not in ("group", "local"):
            raise BadParameterError(f"scope must be 'group' or 'local', got {scope!r}")
        # A peer gathering a page asks for one row more than its client (to know whether there is a next page).
        limit = parse_limit(request.query, default=OPEN_ROWS,
                            maximum=MAX_OPEN_ROWS + 1 if scope == "local" else MAX_OPEN_ROWS)
        after = parse_after(request.query)
        self.require_ready()
        export = self.app.pipeline.export
        # One more than the page, to know whether there is a next one.
        rows = [row_to_api(r) for r in export.open_rows(spec.name, event_type, after, limit + 1)]
        partitions = set(export.partitions)
        answer: dict[str, Any] = {"window": spec.name, "watermark": self.watermark()}
        if scope == "local":
            answer.update(partitions=sorted(partitions), **page(rows, limit))
            return self.json(answer)
        listed, covered, missing = await self._gather(request, partitions, limit + 1)
        listed.extend(rows)
        listed.sort(key=lambda r: (r["window_start_ms"], r["event_type"]))
        total = self.app.settings.kafka.topic_partitions
        answer.update(complete=not missing and covered >= set(range(total)), missing_peers=missing,
                      **page(listed, limit))
        return self.json(answer)

    async def _gather(self, request: web.Request, local: set[int],
                      limit: int) -> tuple[list[dict[str, Any]], set[int], list[str]]:
        app = self.app
        peers = [url for url in owners(app) if not same_node(app, url)]
        query = {**request.query, "scope": "local", "limit": str(limit)}

        async def ask(url: URL) -> dict[str, Any]:
            target = url.with_path(request.url.path).with_query(query)
            timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
            async with app.http_client.get(target, timeout=timeout, headers=peer_headers(app)) as response:
                response.raise_for_status()
                result: dict[str, Any] = await response.json()
                return result

        async def ask_allowed(url: URL) -> dict[str, Any]:
            refused = peer_refused(app, url)
            if refused:
                raise PermissionError(refused)
            return await ask(url)

        answers = await asyncio.gather(*(ask_allowed(url) for url in peers), return_exceptions=True)
        rows: list[dict[str, Any]] = []
        covered = set(local)
        missing = []
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, PermissionError):
                log.error("open windows: peer %s not asked: %s", url, answer)
                missing.append(str(url))
                continue
            if isinstance(answer, BaseException):
                log.warning("open windows: peer %s did not answer: %r", url, answer)
                missing.append(str(url))
                continue
            rows.extend(answer["open"])
            covered.update(answer["partitions"])
        return rows, covered, missing


@blueprint.route("/windows/{window}/closed", name="closed-windows")
class ClosedWindowsView(ApiView):
    """The latest closed windows per event type, from Redis (any worker answers)."""

    async def get(self, request: web.Request, window: str) -> web.Response:
        spec = self.window(window)
        event_type = parse_event_type(request.query, required=False)
        limit = parse_limit(request.query)
        outputs = self.app.outputs
        types = [event_type] if event_type else await outputs.read_event_types(spec.name, MAX_LISTED_TYPES)
        closed = {}
        for name in types:
            closed[name] = [row_to_api(r) for r in await outputs.read_latest(spec.name, name, limit)]
        return self.json({"window": spec.name, "watermark": self.watermark(), "closed": closed})


@blueprint.route("/windows/{window}/value", name="window-value")
class WindowValueView(ApiView):
    """One (window, event_type, window_start): open values from its owner, or the closed row."""

    async def get(self, request: web.Request, window: str) -> web.Response:
        spec = self.window(window)
        event_type = parse_event_type(request.query, required=True)
        assert event_type is not None
        start_ms = parse_start(request.query, spec)
        app = self.app
        key = PartialKey(spec.name, start_ms, event_type)
        owner = owner_of(app, key)
        if owner is not None and not same_node(app, owner) and HOP_PARAM not in request.query:
            return await self.route(request, owner)
        self.require_ready()
        row = local_open_row(app, key, spec)
        state = "open"
        low_ms = app.stats.low_frontier_ms
        if row is not None and is_closed(row.window_start_ms, spec.size_ms, low_ms):
            state = "closing"  # the watermark passed it; its export is in progress or retrying
        if row is None:
            row = await app.outputs.read_window(spec.name, event_type, start_ms)
            state = "closed"
        if row is None:
            raise UnknownNameError(f"no window {spec.name!r} starting at {start_ms} for event_type {event_type!r} "
                              "(no events, or expired from Redis)")
        return self.json({"window": spec.name, "watermark": self.watermark(), "state": state,
                          "row": row_to_api(row), "served_by": str(app.conf.canonical_url)})



ALERT_STATES = ("firing", "resolved")


@blueprint.route("/alerts", name="alerts")
class AlertsView(ApiView):
    """Alerts from Redis (any worker answers, as for closed windows): those firing now, and the recent
    history newest first; `state` and `rule` filter both, `limit` bounds the history."""

    async def get(self, request: web.Request) -> web.Response:
        state = request.query.get("state") or None
        if state is not None and state not in ALERT_STATES:
            raise BadParameterError(f"state must be 'firing' or 'resolved', got {state!r}")
        rule = request.query.get("rule") or None
        rules = [r.name for r in self.app.settings.pipeline.alert_rules]
        if rule is not None and rule not in rules:
            raise UnknownNameError(f"unknown rule {rule!r}; rules: {', '.join(rules) or 'none (ALERT_RULES)'}")
        limit = parse_limit(request.query, default=100)
        active, recent = await self.app.outputs.read_alerts(MAX_RECENT_ALERTS)

        def keep(alert: dict[str, Any]) -> bool:
            return rule is None or alert["rule"] == rule

        firing = sorted((a for a in map(orjson.loads, active) if keep(a) and state != "resolved"),
                        key=lambda a: (-a["window_start_ms"], a["rule"], a["event_type"]))
        history = [a for a in map(orjson.loads, recent) if keep(a) and (state is None or a["state"] == state)]
        return self.json({"active": firing, "recent": history[:limit], "rules": rules})


@blueprint.route("/aggregations", name="aggregations")
class AggregationsView(ApiView):
    """The aggregations of the AGGREGATIONS spec (none: the pipeline runs the article's job)."""

    async def get(self, request: web.Request) -> web.Response:
        spec = self.app.settings.pipeline.spec
        aggregations = [aggregation_to_api(a) for a in spec.aggregations] if spec is not None else []
        return self.json({"aggregations": aggregations, "watermark": self.watermark()})


@blueprint.route("/aggregations/{aggregation}/{window}/closed", name="aggregation-closed")
class AggregationClosedView(ApiView):
    """The latest closed windows of one key of a spec's aggregation, newest first, from Redis (any worker
    answers); the key's parts are query parameters named by their columns."""

    async def get(self, request: web.Request, aggregation: str, window: str) -> web.Response:
        found = find_aggregation(self.app.settings.pipeline.spec, aggregation)
        spec = find_aggregation_window(self.app.settings.pipeline.windows, found, window)
        if found.redis == "off":
            raise UnknownNameError(f"aggregation {found.name!r} writes its windows to the lake only (redis = \"off\")")
        key = parse_key(request.query, found)
        limit = parse_limit(request.query)
        layout = found.layout()
        rows = await self.app.outputs.read_latest_aggregates(found.name, spec.name, key, limit, layout)
        return self.json({"aggregation": found.name, "window": spec.name, "watermark": self.watermark(),
                          "key": {column: part for (column, _), part in zip(layout.key, key, strict=True)},
                          "closed": [aggregate_row_to_api(row, layout) for row in rows]})


@blueprint.route("/aggregations/{aggregation}/{window}/open", name="aggregation-open")
class AggregationOpenView(ApiView):
    """The windows of one key of a spec's aggregation not exported yet, oldest first, from the stage-2
    state of the worker that owns the key (another worker routes the request there, as for
    /v1/windows/{window}/value); `state` is "closing" once the watermark has passed a window."""

    async def get(self, request: web.Request, aggregation: str, window: str) -> web.Response:
        found = find_aggregation(self.app.settings.pipeline.spec, aggregation)
        spec = find_aggregation_window(self.app.settings.pipeline.windows, found, window)
        key = parse_key(request.query, found)
        app, text, layout = self.app, key_text(key), found.layout()
        owner = owner_of_partition(app, key_partition(found.name, text, app.settings.kafka.topic_partitions))
        if owner is not None and not same_node(app, owner) and HOP_PARAM not in request.query:
            return await self.route(request, owner)
        self.require_ready()
        low_ms = app.stats.low_frontier_ms
        rows = app.pipeline.export.open_aggregate_rows(f"{found.name}/{spec.name}", text)
        found_rows = [{**aggregate_row_to_api(row, layout),
                       "state": "closing" if is_closed(row.window_start_ms, spec.size_ms, low_ms) else "open"}
                      for row in rows]
        return self.json({"aggregation": found.name, "window": spec.name, "watermark": self.watermark(),
                          "key": {column: part for (column, _), part in zip(layout.key, key, strict=True)},
                          "open": found_rows, "served_by": str(app.conf.canonical_url)})


TOP_KEYS: Final = 10  # keys a top-keys request answers by default (at most MAX_LIMIT)


@blueprint.route("/aggregations/{aggregation}/{window}/top", name="aggregation-top")
class AggregationTopView(ApiView):
    """The keys of a spec's aggregation's newest closed window (or the closed window at `start`) ranked
    by `measure` (``<measure>.<statistic>``), highest first (`order=asc`: lowest), from the lake (any
    worker answers; sinks/ranking.py); `keys` counts the window's keys that had the measure, `parts` the
    stage-2 partitions whose export of the window was read."""

    async def get(self, request: web.Request, aggregation: str, window: str) -> web.Response:
        found = find_aggregation(self.app.settings.pipeline.spec, aggregation)
        spec = find_aggregation_window(self.app.settings.pipeline.windows, found, window)
        measure, statistic = parse_measure(request.query, found)
        descending = parse_order(request.query)
        limit = parse_limit(request.query, default=TOP_KEYS)
        low_ms = self.app.stats.low_frontier_ms
        exact = "start" in request.query
        if exact:
            newest = parse_start(request.query, spec)
            if not is_closed(newest, spec.size_ms, low_ms):
                raise UnknownNameError(f"window {spec.name!r} starting at {iso_utc(newest)} is not closed yet: its "
                                       f"keys' values so far are at /v1/aggregations/{found.name}/{spec.name}/open")
        elif low_ms is None:
            newest = None
        else:
            newest = first_open_start(spec, low_ms) - spec.step_ms  # the newest closed window's start
        layout = found.layout()
        answer: dict[str, Any] = {"aggregation": found.name, "window": spec.name, "watermark": self.watermark(),
                                  "measure": f"{measure}.{statistic}", "order": "desc" if descending else "asc"}
        if newest is None:
            return self.json({**answer, "window_start_ms": None, "window_start": None, "keys": 0, "parts": 0,
                              "top": []})
        read = await self.app.outputs.read_top_keys(found.name, layout, spec.name, newest, measure, statistic,
                                                    descending, limit, exact)
        start = read.window_start_ms
        return self.json({**answer, "window_start_ms": start, "window_start": None if start is None else iso_utc(start),
                          "keys": read.keys, "parts": read.parts, "skipped": read.skipped,
                          "top": [aggregate_row_to_api(row, layout) for row in read.rows]})


ROLLUP_ROWS: Final = 1_000  # rows a request of rollups answers by default
MAX_ROLLUP_ROWS: Final = 10_000  # and at most (per-user rollups have a row per user and hour)


@blueprint.route("/aggregations/{aggregation}/rollups/{period}", name="aggregation-rollups")
class AggregationRollupsView(ApiView):
    """A spec's aggregation's hourly or daily rollup rows of a range, from the lake (any worker answers;
    S3 errors answer 503), by period then key; key parts given as query parameters (any of them) filter
    the rows; at most `limit` rows, and `truncated` says whether there were more."""

    async def get(self, request: web.Request, aggregation: str, period: str) -> web.Response:
        found = find_aggregation(self.app.settings.pipeline.spec, aggregation)
        wanted = parse_rollup_range(period, request.query, _now_ms(), by_event_type=False)
        key = parse_key_filter(request.query, found)
        limit = parse_limit(request.query, default=ROLLUP_ROWS, maximum=MAX_ROLLUP_ROWS)
        layout = found.rollup_layout()
        read = await self.app.outputs.read_aggregate_rollups(found.name, layout, wanted.period, wanted.from_ms,
                                                             wanted.to_ms, key, limit)
        return self.json({"aggregation": found.name, "period": wanted.period, "from_ms": wanted.from_ms,
                          "to_ms": wanted.to_ms, "from": iso_utc(wanted.from_ms), "to": iso_utc(wanted.to_ms),
                          "key": key, "rollups": [aggregate_rollup_to_api(row, layout) for row in read.rows],
                          "truncated": read.truncated, "skipped": read.skipped})


@blueprint.route("/rollups/{period}", name="rollups")
class RollupsView(ApiView):
    """The batch layer's hourly or daily rollup rows of a range, from the lake (any worker answers; S3
    errors answer 503), by period then event type; at most `limit` rows, and `truncated` says whether there
    were more. Periods with no object yet are simply absent."""

    async def get(self, request: web.Request, period: str) -> web.Response:
        if self.app.settings.pipeline.spec is not None:
            raise UnknownNameError("this pipeline runs an AGGREGATIONS spec: its rollups are per aggregation, at "
                                   "/v1/aggregations/{aggregation}/rollups/{period}")
        wanted = parse_rollup_range(period, request.query, _now_ms())
        limit = parse_limit(request.query, default=ROLLUP_ROWS, maximum=MAX_ROLLUP_ROWS)
        read = await self.app.outputs.read_rollups(wanted.period, wanted.from_ms, wanted.to_ms, wanted.event_type,
                                                   limit)
        return self.json({"period": wanted.period, "from_ms": wanted.from_ms, "to_ms": wanted.to_ms,
                          "from": iso_utc(wanted.from_ms), "to": iso_utc(wanted.to_ms),
                          "event_type": wanted.event_type, "rollups": [rollup_to_api(row) for row in read.rows],
                          "truncated": read.truncated, "skipped": read.skipped})


@blueprint.route("/{tail:.*}", name="not-found")
class NotFoundView(ApiView):
    """Unknown paths under the prefix: a JSON 404 instead of aiohttp's text page."""

    async def get(self, request: web.Request, tail: str) -> web.Response:
        return self.api_error(404, f"no such endpoint: {request.path}; see the README's web API")


class MetricsView(ApiView):
    open_to_all = True

    async def get(self, request: web.Request) -> web.Response:
        # Prometheus' content type carries a version parameter, hence bytes + explicit header.
        return self.bytes(self.app.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- state lookups ----------------------------------------------------------------------


def local_open_row(app: WebApp, key: PartialKey, spec: WindowSpec) -> WindowRow | None:
    return app.pipeline.export.open_row(key)


# -- routing: the stage-2 owner of a window key, from the export group's assignment ------


def owners(app: WebApp) -> list[URL]:
    """Web URLs of the members of the export group (from its last assignment)."""
    return [URL(url) for url in app.pipeline.export_runner.owners()]


def owner_of(app: WebApp, key: PartialKey) -> URL | None:
    """The worker owning this window key: the one whose stage 2 owns the partition its partials go to."""
    return owner_of_partition(app, partial_partition(key.event_type, app.settings.kafka.topic_partitions))


def owner_of_partition(app: WebApp, partition: int) -> URL | None:
    for url, partitions in app.pipeline.export_runner.owners().items():
        if partition in partitions:
            return URL(url)
    return None


def same_node(app: WebApp, url: URL) -> bool:
    canonical = URL(str(app.conf.canonical_url))
    return (url.host, url.port) == (canonical.host, canonical.port)


def register(app: WebApp) -> None:
    blueprint.register(app, url_prefix=API_PREFIX)
    app.page("/metrics", name="metrics")(MetricsView)
