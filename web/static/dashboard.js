/* Live dashboard: polls the worker's JSON API (/v1) every 2 s and draws it with uPlot.
 *
 * Event types are untrusted text: they reach the page only through textContent (uPlot's
 * legend uses textContent too) and reach URLs only through encodeURIComponent.
 * What was drawn is kept in window.dashboardState, and summarised in data-* attributes on
 * each chart, so a test can compare it with the API. */
"use strict";

(() => {
  const POLL_MS = 2000;
  // Under one poll, so a hung worker shows as unreachable instead of stalling the page.
  const FETCH_TIMEOUT_MS = 1800;
  // An idle partition's watermark follows the wall clock after IDLE_TIMEOUT (30 s by
  // default), so a healthy worker's watermark never stands still for twice that.
  const STALE_WATERMARK_MS = 60000;
  const RATE_HISTORY = 150; // samples: 5 minutes at one per poll
  // Polls a rate is averaged over (10 s): the worker consumes in batches, so the count
  // between two polls alone jumps up and down around the real rate.
  const RATE_SPAN = 5;
  // Window starts a chart lays out one by one; a wider span (old rows) gets only those with data.
  const MAX_GRID = 5000;
  const CLOSED_LIMIT = 60; // newest closed windows per event type: an hour of tumbling_1m
  const MAX_SERIES = 12; // more lines than this are unreadable; the busiest event types are kept
  // Recent alerts asked for per poll (the API's default): the panel's history and the chart's markers.
  const ALERTS_LIMIT = 100;
  const MARK_COLORS = { firing: "#b91c1c", resolved: "#15803d" };
  // The batch layer's rollups change once an hour at most: read every minute, with more time to
  // answer (one S3 object per period), over the API's default ranges (48 hours, 31 days).
  const ROLLUP_POLL_MS = 60000;
  const ROLLUP_TIMEOUT_MS = 10000;
  const ROLLUP_ROWS = 10000; // the most one request of /v1/rollups answers (its default is 1000)
  const ROLLUP_PERIODS = { hourly: 3600000, daily: 86400000 };
  const ROLLUP_MEASURES = ["count", "distinct_users", "sum", "mean", "p50", "p95", "p99", "min", "max"];
  const MEASURES = ["count", "sum", "mean", "min", "max"];
  // With an AGGREGATIONS spec: the top keys of the newest closed window, read from the lake (one LIST per
  // poll while the window stays the same: the worker caches its objects), and their closed windows from Redis.
  const TOP_POLL_MS = 5000;
  const TOP_TIMEOUT_MS = 10000;
  const TOP_LIMIT = 10;
  const TOP_STATISTICS = ["max", "mean", "min", "sum", "count"];
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
    "#db2777", "#65a30d", "#475569", "#ea580c", "#4f46e5", "#0d9488"];

  const state = {
    polls: 0, // completed polls, successful or not
    reachable: null, // null until the first poll ends
    error: null,
    unreachableSince: null,
    lastOkAt: null,
    spec: null, // the aggregations of /v1/aggregations once it answered; [] when the worker runs the article's job
    // The top keys panel (a spec only): the selection, the ranked rows of /v1/aggregations/{a}/{w}/top, and
    // the series drawn (a line per ranked key, from its closed windows in Redis).
    top: { aggregation: null, window: null, measure: null, order: "desc", window_start_ms: null, rows: [],
      keys: 0, parts: 0, series: [], error: null, historyError: null, polls: 0 },
    windows: [], // from /v1/windows
    window: null,
    measure: "count",
    status: null, // the last /v1/status
    watermarkStale: false,
    firstTotal: null, // {total, at}: consumed_total before the first sample kept in `rate`
    lastTotal: null,
    rate: [], // {t_ms, eps, delta, lag}
    chart: { window: null, measure: null, series: [], hiddenTypes: 0, error: null, markers: [], markersDrawn: 0 },
    alerts: { rules: [], active: [], recent: [], error: null }, // from /v1/alerts
    // From /v1/rollups/{period}: the rows, and the series drawn for the selected measure.
    rollups: { measure: "count", polls: 0,
      hourly: { rows: [], from_ms: null, to_ms: null, error: null, series: [], hiddenTypes: 0 },
      daily: { rows: [], from_ms: null, to_ms: null, error: null, series: [], hiddenTypes: 0 } },
  };
  window.dashboardState = state;

  const colors = new Map(); // event type -> colour, fixed at first sight so lines keep theirs
  let valuesPlot = null;
  let valuesKey = ""; // what valuesPlot was built for: a new selection or event type rebuilds it
  let ratePlot = null;
  const rollupPlots = { hourly: null, daily: null };
  const rollupKeys = { hourly: "", daily: "" }; // what each plot was built for, as valuesKey
  let refreshTimer = null;
  let topPlot = null;
  let topKey = ""; // what topPlot was built for, as valuesKey
  let topTimer = null;
  let topGeneration = 0; // a new selection starts a new generation; an older poll's answer is dropped
  let recentTotals = []; // {total, at} of the last RATE_SPAN + 1 polls

  const $ = (id) => document.getElementById(id);
  const intFormat = new Intl.NumberFormat("en-US");
  const numFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 3 });
  const fmtInt = (n) => (n == null ? "—" : intFormat.format(n));
  const fmtNum = (n) => (n == null ? "—" : numFormat.format(n));
  const pad = (n) => String(n).padStart(2, "0");

  function fmtTime(ms) {
    if (ms == null) return "—";
    const d = new Date(ms);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }

  // Time-axis labels in UTC, 24-hour, with seconds only where a tick needs them.
  function timeTicks(u, ticks) {
    const seconds = ticks.some((t) => t % 60 !== 0);
    return ticks.map((t) => fmtTime(t * 1000).slice(0, seconds ? 8 : 5));
  }

  // Tick steps in seconds: windows start on whole 30 s at least, status samples 2 s apart.
  const WINDOW_INCRS = [30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  const RATE_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

  // Events and records come whole: no 0.2 ticks on a small scale.
  const countTicks = (u, ticks) => ticks.map((v) => (Number.isInteger(v) ? fmtInt(v) : ""));

  function fmtDuration(ms) {
    if (ms == null) return "—";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  // ---- fetching ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(`HTTP ${status}: ${message}`);
      this.status = status;
    }
  }

  // The worker's WEB_AUTH_TOKEN, when it has one: asked for once, kept for this tab only.
  const TOKEN_KEY = "pipeline-web-token";

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function askForToken() {
    const form = $("auth");
    if (!form.hidden) return;
    form.hidden = false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("auth-token").value.trim());
      form.hidden = true;
    }, { once: true });
  }

  async function getJSON(path, timeoutMs = FETCH_TIMEOUT_MS) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const response = await fetch(path, { signal: abort.signal, cache: "no-store",
        headers: { Accept: "application/json", ...authHeaders() } });
      if (response.status === 401) askForToken();
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        throw new ApiError(response.status, (body && body.error && body.error.message) || response.statusText);
      }
      return body;
    } catch (err) {
      if (err.name === "AbortError") throw new Error(`no answer within ${timeoutMs} ms`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  const windowPath = (name, what, query) =>
    `/v1/windows/${encodeURIComponent(name)}/${what}${query ? `?${query}` : ""}`;

  // ---- polling -----------------------------------------------------------------------

  async function poll() {
    const started = performance.now();
    let answers = null;
    try {
      if (state.spec == null) await loadSpec();
      if (state.windows.length === 0) await loadWindows();
      answers = await fetchAll({ window: specMode() ? null : state.window, measure: state.measure });
      setReachable(null);
    } catch (err) {
      setReachable(err);
    }
    // Drawing errors are not the worker's: they propagate to the console, and polling goes on.
    try {
      if (answers) draw(answers, started);
    } finally {
      state.polls += 1;
      renderConnection();
      setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
    }
  }

  async function fetchAll(selection) {
    const [status, closed, open, alerts] = await Promise.allSettled([
      getJSON("/v1/status"),
      selection.window ? getJSON(windowPath(selection.window, "closed", `limit=${CLOSED_LIMIT}`)) : null,
      selection.window ? getJSON(windowPath(selection.window, "open")) : null,
      getJSON(`/v1/alerts?limit=${ALERTS_LIMIT}`),
    ]);
    if (status.status === "rejected") throw status.reason;
    return { selection, status: status.value, closed, open, alerts };
  }

  function draw({ selection, status, closed, open, alerts }, requestedAt) {
    onStatus(status, requestedAt);
    onAlerts(alerts); // before the chart: its markers come from these alerts
    // A selection changed while the requests were out: their answer is for the old one.
    if (!specMode() && selection.window === state.window && selection.measure === state.measure) {
      onWindowValues(selection, closed, open);
    }
  }

  const specMode = () => state.spec != null && state.spec.length > 0;

  // Which panels show depends on the worker's job: with a spec, the top keys take the place of the event
  // types' window values, and the batch rollups are per aggregation (the API names them).
  async function loadSpec() {
    const body = await getJSON("/v1/aggregations");
    state.spec = body.aggregations || [];
    document.body.dataset.mode = specMode() ? "spec" : "article";
    if (!specMode()) {
      pollRollups();
      return;
    }
    $("values-card").hidden = true;
    $("top-card").hidden = false;
    $("rollups-charts").hidden = true;
    $("rollups-caption").hidden = true;
    $("rollup-measure-select").parentElement.hidden = true;
    const note = $("rollups-note");
    note.textContent = "This worker runs an AGGREGATIONS spec: each aggregation's hourly and daily rollups are at " +
      "/v1/aggregations/{aggregation}/rollups/{period}.";
    note.hidden = false;
    const hash = readHash();
    fillSelect($("agg-select"), state.spec.map((a) => a.name));
    const wanted = state.spec.find((a) => a.name === hash.get("aggregation")) || state.spec[0];
    setAggregation(wanted.name, hash.get("agg_window"), hash.get("agg_measure"));
    state.top.order = hash.get("order") === "asc" ? "asc" : "desc";
    $("agg-order-select").value = state.top.order;
    pollTop(++topGeneration);
  }

  function fillSelect(select, values, labels) {
    select.replaceChildren(...values.map((value, i) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = labels ? labels[i] : value;
      return option;
    }));
  }

  const aggregationOf = (name) => state.spec.find((a) => a.name === name);

  // An aggregation's windows and measures fill their selects; a window or measure it lacks falls back to its first.
  function setAggregation(name, windowName, measure) {
    const aggregation = aggregationOf(name);
    const measures = aggregation.measures.flatMap((m) => TOP_STATISTICS.map((s) => `${m.column}.${s}`));
    fillSelect($("agg-window-select"), aggregation.windows);
    fillSelect($("agg-measure-select"), measures);
    Object.assign(state.top, { aggregation: name,
      window: aggregation.windows.includes(windowName) ? windowName : aggregation.windows[0],
      measure: measures.includes(measure) ? measure : measures[0] });
    $("agg-select").value = name;
    $("agg-window-select").value = state.top.window;
    $("agg-measure-select").value = state.top.measure;
  }

  async function loadWindows() {
    const body = await getJSON("/v1/windows");
    state.windows = body.windows || [];
    const select = $("window-select");
    select.replaceChildren(...state.windows.map((w) => {
      const option = document.createElement("option");
      option.value = w.name;
      option.textContent = w.name;
      return option;
    }));
    const wanted = readHash().get("window");
    state.window = state.windows.some((w) => w.name === wanted) ? wanted : (state.windows[0] || {}).name || null;
    select.value = state.window || "";
  }

  function setReachable(err) {
    if (err == null) {
      state.reachable = true;
      state.error = null;
      state.unreachableSince = null;
      state.lastOkAt = Date.now();
      return;
    }
    if (state.reachable !== false) state.unreachableSince = Date.now();
    state.reachable = false;
    state.error = err instanceof TypeError ? "connection failed" : String(err.message || err);
  }

  // ---- status ------------------------------------------------------------------------

  function onStatus(status, requestedAt) {
    state.status = status;
    const lag = sumValues(status.lag_by_partition);
    recordRate(status.consumed_total, requestedAt, lag);
    const wm = status.watermark || {};
    state.watermarkStale = wm.age_ms != null && wm.age_ms > STALE_WATERMARK_MS;
    renderStatus(status, lag, wm);
    renderRate();
  }

  function sumValues(byPartition) {
    if (!byPartition) return null;
    return Object.values(byPartition).reduce((a, b) => a + b, 0);
  }

  function recordRate(total, at, lag) {
    const previous = state.lastTotal;
    // A restarted worker counts from zero again: its rates start a new history.
    if (previous == null || total < previous.total) {
      state.firstTotal = { total, at };
      state.rate = [];
      recentTotals = [];
    }
    state.lastTotal = { total, at };
    recentTotals.push({ total, at });
    if (recentTotals.length > RATE_SPAN + 1) recentTotals.shift();
    if (recentTotals.length < 2) return;
    const oldest = recentTotals[0];
    state.rate.push({ t_ms: Date.now(), eps: (total - oldest.total) / ((at - oldest.at) / 1000),
      delta: total - previous.total, lag });
    if (state.rate.length > RATE_HISTORY) {
      const dropped = state.rate.shift();
      state.firstTotal = { total: state.firstTotal.total + dropped.delta, at: state.firstTotal.at };
    }
  }

  function setStat(id, value, text) {
    const el = $(id);
    el.dataset.value = value == null ? "" : String(value);
    el.textContent = text != null ? text : fmtInt(value);
  }

  function renderStatus(status, lag, wm) {
    const last = state.rate[state.rate.length - 1];
    setStat("stat-throughput", last ? Math.round(last.eps) : null);
    setStat("stat-consumed", status.consumed_total);
    setStat("stat-lag", lag);
    setStat("stat-watermark", wm.low_ms, wm.low_ms == null ? "none yet" : fmtTime(wm.low_ms));
    $("stat-watermark").title = wm.low || "";
    setStat("stat-watermark-age", wm.age_ms, wm.age_ms == null ? "\u00a0" : `UTC; moved ${fmtDuration(wm.age_ms)} ago`);
    $("tile-watermark").classList.toggle("warn", state.watermarkStale);
    setStat("stat-dlq", status.dead_letters);
    setStat("stat-late", status.late);
    setStat("stat-windows-exported", status.windows_exported);
    setStat("stat-rows-exported", status.rows_exported);
    const delay = status.export_delay_ms || {};
    setStat("stat-delay-p50", delay.p50, delay.p50 == null ? "—" : `${fmtInt(delay.p50)} ms`);
    setStat("stat-delay-p99", delay.p99, delay.p99 == null ? "—" : `${fmtInt(delay.p99)} ms`);
    $("stat-delay-p50").title = `from ${fmtInt(delay.samples)} exported windows`;
    setStat("stat-retries", status.sink_retries);
    renderPartitions(status, wm);
  }

  function renderPartitions(status, wm) {
    const consumed = status.consumed_by_partition || {};
    const lag = status.lag_by_partition || {};
    const marks = wm.by_partition || {};
    const ids = [...new Set([...Object.keys(consumed), ...Object.keys(lag), ...Object.keys(marks)])]
      .sort((a, b) => Number(a) - Number(b));
    $("partitions").tBodies[0].replaceChildren(...ids.map((p) => row([
      [p], [fmtInt(consumed[p]), "num"], [fmtInt(lag[p]), "num"], [marks[p] == null ? "—" : fmtTime(marks[p])],
    ])));
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }

  // ---- window values -----------------------------------------------------------------

  function onWindowValues(selection, closed, open) {
    const errors = [closed, open].filter((r) => r && r.status === "rejected").map((r) => r.reason.message);
    const closedRows = closed && closed.status === "fulfilled" && closed.value ? closed.value.closed || {} : {};
    const openRows = open && open.status === "fulfilled" && open.value ? open.value.open || [] : [];
    const advance = (state.windows.find((w) => w.name === selection.window) || {}).advance_ms;
    const { series, hiddenTypes } = buildSeries(closedRows, openRows, selection.measure);
    state.chart = { window: selection.window, measure: selection.measure, series, hiddenTypes,
      error: errors.length ? errors.join("; ") : null, markers: chartMarkers(selection.window, series),
      markersDrawn: 0 };
    drawValues(advance);
    renderLatest();
    renderNote();
  }

  // revision: 0 from the speed layer, 1 and up once the batch layer restated the row with late events.
  const point = (row, measure) => ({ start_ms: row.window_start_ms, end_ms: row.window_end_ms,
    value: row[measure], count: row.count, revision: row.revision || 0, late_count: row.late_count || 0 });
  const byStart = (a, b) => a.start_ms - b.start_ms;

  function buildSeries(closedByType, openRows, measure) {
    const byType = new Map();
    const entry = (type) => {
      if (!byType.has(type)) byType.set(type, { event_type: type, closed: [], open: [] });
      return byType.get(type);
    };
    for (const [type, rows] of Object.entries(closedByType)) {
      entry(type).closed = rows.map((r) => point(r, measure)).sort(byStart);
    }
    for (const r of openRows) {
      const e = entry(r.event_type);
      // Between its export and the deletion of its state a window can be in both answers.
      if (!e.closed.some((c) => c.start_ms === r.window_start_ms)) e.open.push(point(r, measure));
    }
    const total = (s) => [...s.closed, ...s.open].reduce((a, p) => a + p.count, 0);
    const all = [...byType.values()].sort((a, b) => total(b) - total(a));
    const series = all.slice(0, MAX_SERIES).sort((a, b) => (a.event_type < b.event_type ? -1 : 1));
    for (const s of series) s.open.sort(byStart);
    return { series, hiddenTypes: all.length - series.length };
  }

  function colorOf(type) {
    if (!colors.has(type)) colors.set(type, PALETTE[colors.size % PALETTE.length]);
    return colors.get(type);
  }

  // Every window start from the first to the last, so that a window without events breaks
  // its line instead of being bridged by it.
  function windowStarts(series, advance) {
    const starts = [...new Set(series.flatMap((s) => [...s.closed, ...s.open].map((p) => p.start_ms)))]
      .sort((a, b) => a - b);
    const first = starts[0];
    const last = starts[starts.length - 1];
    if (!advance || starts.length < 2 || (last - first) / advance > MAX_GRID) return starts;
    const grid = [];
    for (let x = first; x <= last; x += advance) grid.push(x);
    return grid;
  }

  function valuesData(series, advance) {
    const xs = windowStarts(series, advance);
    const index = new Map(xs.map((x, i) => [x, i]));
    const data = [xs.map((x) => x / 1000)];
    for (const s of series) {
      const closed = new Array(xs.length).fill(null);
      const open = new Array(xs.length).fill(null);
      for (const p of s.closed) closed[index.get(p.start_ms)] = p.value;
      for (const p of s.open) open[index.get(p.start_ms)] = p.value;
      // The dashed line starts at the last closed window when the open one follows it.
      const lastClosed = s.closed[s.closed.length - 1];
      if (lastClosed && s.open.length && advance && s.open[0].start_ms === lastClosed.start_ms + advance) {
        open[index.get(lastClosed.start_ms)] = lastClosed.value;
      }
      data.push(closed, open);
    }
    return data;
  }

  function valuesOptions(series, measure, width) {
    const lines = series.flatMap((s) => {
      const color = colorOf(s.event_type);
      return [
        { label: s.event_type, stroke: color, width: 2, points: { show: true, size: 5, fill: color } },
        { label: `${s.event_type} (open)`, class: "open-series", stroke: color, width: 2, dash: [6, 4],
          points: { show: true, size: 8, width: 2, fill: "#ffffff" } },
      ];
    });
    return {
      width, height: 340,
      padding: [null, 28, null, null], // room for the last time label; null: uPlot's own
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true } },
      series: [{ label: "window start" }, ...lines],
      axes: [{ values: timeTicks, incrs: WINDOW_INCRS }, { label: measure, size: 70, values: (u, ticks) => ticks.map(fmtNum) }],
      legend: { live: true },
      cursor: { focus: { prox: 24 } },
      focus: { alpha: 0.35 },
      hooks: { setSeries: [syncOpenTwin], draw: [drawMarkers] },
    };
  }

  // Hiding an event type from the legend hides its open windows as well.
  function syncOpenTwin(u, index, opts) {
    if (index == null || index % 2 === 0 || !opts || opts.show == null) return;
    if (u.series[index + 1].show !== opts.show) u.setSeries(index + 1, { show: opts.show });
  }

  function drawValues(advance) {
    const { series, measure, window: name } = state.chart;
    const el = $("window-chart");
    const data = valuesData(series, advance);
    const key = JSON.stringify([name, measure, series.map((s) => s.event_type)]);
    if (valuesPlot && key === valuesKey) {
      valuesPlot.setData(data);
    } else {
      if (valuesPlot) valuesPlot.destroy();
      valuesPlot = new uPlot(valuesOptions(series, measure, chartWidth(el)), data, el);
      valuesKey = key;
    }
    el.dataset.window = name || "";
    el.dataset.measure = measure;
    el.dataset.series = String(series.length);
    el.dataset.points = String(series.reduce((a, s) => a + s.closed.length + s.open.length, 0));
    el.dataset.closedPoints = String(series.reduce((a, s) => a + s.closed.length, 0));
    el.dataset.openPoints = String(series.reduce((a, s) => a + s.open.length, 0));
    el.dataset.restatedPoints = String(series.reduce((a, s) => a + s.closed.filter((p) => p.revision > 0).length, 0));
    el.dataset.markers = String(state.chart.markers.length);
  }

  function renderLatest() {
    const { series } = state.chart;
    const rows = series.map((s) => {
      const lastClosed = s.closed[s.closed.length - 1];
      const lastOpen = s.open[s.open.length - 1];
      const tr = row([
        [s.event_type, "type"],
        [lastClosed ? fmtTime(lastClosed.start_ms) : "—"], [fmtNum(lastClosed && lastClosed.value), "num"],
        [lastClosed && lastClosed.revision ? `${lastClosed.revision} (${fmtNum(lastClosed.late_count)} late)` : "—",
          "num"],
        [lastOpen ? fmtTime(lastOpen.start_ms) : "—"], [fmtNum(lastOpen && lastOpen.value), "num"],
      ]);
      tr.firstChild.style.setProperty("--swatch", colorOf(s.event_type));
      tr.firstChild.title = s.event_type;
      return tr;
    });
    $("latest").tBodies[0].replaceChildren(...rows);
  }

  function renderNote() {
    const { series, hiddenTypes, error } = state.chart;
    const notes = [];
    if (error) notes.push(`Some window data is unavailable: ${error}`);
    if (hiddenTypes) notes.push(`Showing the ${series.length} busiest event types; ${hiddenTypes} more not drawn.`);
    if (!error && series.length === 0) notes.push("No windows yet: they appear once events arrive.");
    const el = $("window-note");
    el.textContent = notes.join(" ");
    el.hidden = notes.length === 0;
  }

  // ---- top keys (a spec) -------------------------------------------------------------

  const aggregationPath = (top, what, query) =>
    `/v1/aggregations/${encodeURIComponent(top.aggregation)}/${encodeURIComponent(top.window)}/${what}?${query}`;

  // A key's parts as the closed-window endpoint takes them: one parameter per column, empty for a null part.
  const keyQuery = (key) => Object.entries(key).map(([column, part]) => [column, part == null ? "" : String(part)]);
  const keyText = (key) => Object.values(key).map((part) => (part == null ? "null" : String(part))).join(" · ");

  // A statistic of a row's measure; a measure without a value, or a non-finite one (sent as its repr), is null.
  function statOf(row, measure) {
    const dot = measure.lastIndexOf(".");
    const stats = row.measures[measure.slice(0, dot)];
    const statistic = measure.slice(dot + 1);
    const value = stats ? stats[statistic] : null;
    return typeof value === "number" ? value : null;
  }

  async function pollTop(generation) {
    if (generation !== topGeneration) return;
    clearTimeout(topTimer);
    const selection = { ...state.top };
    const query = new URLSearchParams({ measure: selection.measure, order: selection.order, limit: TOP_LIMIT });
    let answer = null;
    let error = null;
    let historyError = null;
    const history = new Map();
    try {
      answer = await getJSON(aggregationPath(selection, "top", query), TOP_TIMEOUT_MS);
      if (aggregationOf(selection.aggregation).redis === "every") {
        const asked = await Promise.allSettled(answer.top.map((r) => getJSON(aggregationPath(selection, "closed",
          new URLSearchParams([...keyQuery(r.key), ["limit", CLOSED_LIMIT]])))));
        asked.forEach((result, i) => {
          if (result.status === "fulfilled") history.set(keyText(answer.top[i].key), result.value.closed || []);
          else historyError = result.reason.message;
        });
      }
    } catch (err) {
      error = err.message;
    }
    if (generation !== topGeneration) return; // the selection changed while the requests were out
    if (answer) {
      Object.assign(state.top, { window_start_ms: answer.window_start_ms, rows: answer.top, keys: answer.keys,
        parts: answer.parts, series: topSeries(answer.top, history, selection.measure) });
    }
    Object.assign(state.top, { error, historyError, polls: state.top.polls + 1 });
    renderTop();
    topTimer = setTimeout(() => pollTop(generation), TOP_POLL_MS);
  }

  // A line per ranked key, in rank order: its closed windows from Redis, and the ranked window itself.
  function topSeries(rows, history, measure) {
    return rows.map((r) => {
      const key = keyText(r.key);
      const points = new Map((history.get(key) || []).map((h) => [h.window_start_ms, statOf(h, measure)]));
      points.set(r.window_start_ms, statOf(r, measure));
      return { key, points: [...points].map(([start_ms, value]) => ({ start_ms, value })).sort(byStart) };
    });
  }

  function renderTop() {
    const { rows, series, measure, window: name, aggregation, error, historyError } = state.top;
    const counted = measure.replace(/[^.]+$/, "count"); // the same measure's count of events
    $("top").tBodies[0].replaceChildren(...rows.map((r, i) => {
      const value = statOf(r, measure);
      const tr = row([[String(i + 1), "num"], [keyText(r.key), "type"], [fmtNum(value), "num"],
        [fmtInt(statOf(r, counted)), "num"],
        [r.revision ? `${r.revision} (${fmtNum(r.late_count)} late)` : "—", "num"]]);
      tr.children[1].style.setProperty("--swatch", colorOf(keyText(r.key)));
      tr.children[1].title = keyText(r.key);
      tr.dataset.key = JSON.stringify(r.key);
      tr.dataset.value = String(value);
      return tr;
    }));
    const el = $("top-chart");
    const advance = (state.windows.find((w) => w.name === name) || {}).advance_ms;
    const xs = windowStarts(series.map((s) => ({ closed: s.points, open: [] })), advance);
    const index = new Map(xs.map((x, i) => [x, i]));
    const data = [xs.map((x) => x / 1000)];
    for (const s of series) {
      const ys = new Array(xs.length).fill(null);
      for (const p of s.points) ys[index.get(p.start_ms)] = p.value;
      data.push(ys);
    }
    const plotKey = JSON.stringify([aggregation, name, measure, series.map((s) => s.key)]);
    if (topPlot && plotKey === topKey) {
      topPlot.setData(data);
    } else {
      if (topPlot) topPlot.destroy();
      topPlot = new uPlot({
        width: chartWidth(el), height: 340,
        padding: [null, 28, null, null],
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true } },
        series: [{ label: "window start" }, ...series.map((s) => ({ label: s.key, stroke: colorOf(s.key), width: 2,
          points: { show: true, size: 5, fill: colorOf(s.key) } }))],
        axes: [{ values: timeTicks, incrs: WINDOW_INCRS },
          { label: measure, size: 70, values: (u, ticks) => ticks.map(fmtNum) }],
        legend: { live: true },
      }, data, el);
      topKey = plotKey;
    }
    Object.assign(el.dataset, { aggregation, window: name, measure, series: String(series.length),
      points: String(series.reduce((a, s) => a + s.points.filter((p) => p.value != null).length, 0)) });
    const start = state.top.window_start_ms;
    $("top-summary").textContent = start == null ? "" :
      `window ${fmtTime(start)} UTC · ${fmtInt(state.top.keys)} keys · ${fmtInt(state.top.parts)} partitions read`;
    const notes = [];
    if (error) notes.push(`Top keys unavailable: ${error}; showing the last answer.`);
    if (historyError) notes.push(`Some keys' closed windows are unavailable: ${historyError}.`);
    if (!error && start == null) notes.push("No closed window of this aggregation yet: keys appear once one closes.");
    const redis = aggregationOf(aggregation).redis;
    if (redis !== "every") {
      const kept = redis === "off" ? "no window" : "only the newest window";
      notes.push(`This aggregation keeps ${kept} per key in Redis: the chart shows the ranked window only.`);
    }
    const note = $("top-note");
    note.textContent = notes.join(" ");
    note.hidden = notes.length === 0;
  }

  function selectTop(changes) {
    if (changes.aggregation) setAggregation(changes.aggregation, state.top.window, state.top.measure);
    else Object.assign(state.top, changes);
    Object.assign(state.top, { rows: [], series: [], window_start_ms: null, keys: 0, parts: 0, error: null,
      historyError: null });
    writeHash();
    renderTop();
    pollTop(++topGeneration);
  }

  // ---- alerts ------------------------------------------------------------------------

  function onAlerts(result) {
    if (result.status === "rejected") {
      // The last lists stay on screen, marked as old; the worker itself may be fine (Redis down).
      state.alerts = { ...state.alerts, error: result.reason.message };
    } else {
      const body = result.value || {};
      state.alerts = { rules: body.rules || [], active: body.active || [], recent: body.recent || [], error: null };
    }
    renderAlerts();
  }

  const ALERT_COLUMNS = (a) => [
    [a.rule, "rule"], [a.severity, `sev-${a.severity}`], [a.state, a.state], [a.event_type, "type"], [a.window],
    [fmtTime(a.window_start_ms)], [fmtNum(a.value), "num"], [fmtNum(a.threshold), "num"], [fmtTime(a.window_end_ms)],
  ];

  function alertRow(a) {
    // row() sets textContent only: rule names, event types and labels stay text.
    const tr = row(ALERT_COLUMNS(a));
    Object.assign(tr.dataset, { id: a.id, rule: a.rule, severity: a.severity, state: a.state,
      eventType: a.event_type, window: a.window, startMs: String(a.window_start_ms),
      endMs: String(a.window_end_ms), value: String(a.value), threshold: String(a.threshold) });
    const type = tr.children[3];
    type.style.setProperty("--swatch", colorOf(a.event_type));
    type.title = a.event_type;
    tr.children[5].title = a.window_start;
    tr.children[8].title = a.window_end;
    const labels = Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    if (labels) tr.firstChild.title = `labels: ${labels}`;
    return tr;
  }

  function renderAlerts() {
    const { rules, active, recent, error } = state.alerts;
    $("alerts-active").tBodies[0].replaceChildren(...active.map(alertRow));
    $("alerts-recent").tBodies[0].replaceChildren(...recent.map(alertRow));
    setStat("stat-alerts", error && state.alerts.rules.length === 0 ? null : active.length);
    $("tile-alerts").classList.toggle("firing", active.length > 0);
    $("alerts-summary").textContent = rules.length
      ? `${fmtInt(rules.length)} rules · ${fmtInt(active.length)} firing · ${fmtInt(recent.length)} recent` : "";
    const notes = [];
    if (error) notes.push(`Alerts unavailable: ${error}; showing the last answer.`);
    else if (rules.length === 0) notes.push("No alert rules: set ALERT_RULES to a rules file (see the README).");
    else if (recent.length === 0) notes.push("No alert has fired yet.");
    const note = $("alerts-note");
    note.textContent = notes.join(" ");
    note.hidden = notes.length === 0;
  }

  // Every alert of the drawn window and event types, once (a firing one is in both lists).
  function chartMarkers(windowName, series) {
    const drawn = new Set(series.map((s) => s.event_type));
    const seen = new Set();
    const markers = [];
    for (const a of [...state.alerts.recent, ...state.alerts.active]) {
      if (a.window !== windowName || !drawn.has(a.event_type) || seen.has(a.id)) continue;
      seen.add(a.id);
      markers.push({ id: a.id, rule: a.rule, state: a.state, event_type: a.event_type, start_ms: a.window_start_ms });
    }
    return markers;
  }

  // uPlot draw hook: a triangle on the type's line at each alert's window start, in canvas pixels.
  function drawMarkers(u) {
    const { markers, series } = state.chart;
    const index = new Map(series.map((s, i) => [s.event_type, 1 + 2 * i])); // the closed line's uPlot index
    const xs = u.data[0];
    const size = 6 * uPlot.pxRatio;
    const ctx = u.ctx;
    let drawn = 0;
    ctx.save();
    for (const m of markers) {
      const i = index.get(m.event_type);
      const at = xs.indexOf(m.start_ms / 1000);
      if (i == null || at < 0 || !u.series[i].show) continue;
      const value = u.data[i][at] != null ? u.data[i][at] : u.data[i + 1][at];
      const dir = m.state === "firing" ? -1 : 1; // fired: points up, above the point; resolved: below, down
      const x = u.valToPos(m.start_ms / 1000, "x", true);
      const foot = u.bbox.top + u.bbox.height - (dir < 0 ? size : size * 3.5); // inside the plot either way
      const y = value != null ? u.valToPos(value, "y", true) : foot;
      const tip = y + dir * size * 2.6;
      const base = y + dir * size * 0.9;
      ctx.beginPath();
      ctx.moveTo(x, tip);
      ctx.lineTo(x - size, base);
      ctx.lineTo(x + size, base);
      ctx.closePath();
      ctx.fillStyle = MARK_COLORS[m.state] || "#475569";
      ctx.strokeStyle = colorOf(m.event_type);
      ctx.lineWidth = uPlot.pxRatio;
      ctx.fill();
      ctx.stroke();
      drawn += 1;
    }
    ctx.restore();
    state.chart.markersDrawn = drawn;
    u.root.parentElement.dataset.markersDrawn = String(drawn);
  }

  // ---- batch rollups -----------------------------------------------------------------

  async function pollRollups() {
    const answers = await Promise.allSettled(Object.keys(ROLLUP_PERIODS).map(
      (period) => getJSON(`/v1/rollups/${period}?limit=${ROLLUP_ROWS}`, ROLLUP_TIMEOUT_MS)));
    Object.keys(ROLLUP_PERIODS).forEach((period, i) => {
      const answer = answers[i];
      const old = state.rollups[period];
      if (answer.status === "rejected") {
        // The last rows stay on screen, marked as old: the worker may be fine and S3 not.
        state.rollups[period] = { ...old, error: answer.reason.message };
      } else {
        const body = answer.value || {};
        state.rollups[period] = { ...old, rows: body.rollups || [], from_ms: body.from_ms, to_ms: body.to_ms,
          error: null };
      }
    });
    state.rollups.polls += 1;
    renderRollups();
    setTimeout(pollRollups, ROLLUP_POLL_MS);
  }

  // One line per event type (the busiest MAX_SERIES by count), a point per period with a row.
  function rollupSeries(rows, measure) {
    const byType = new Map();
    for (const r of rows) {
      if (!byType.has(r.event_type)) byType.set(r.event_type, { event_type: r.event_type, points: [], total: 0 });
      const s = byType.get(r.event_type);
      // A non-finite value travels as its repr string ("inf"): no point for it.
      s.points.push({ start_ms: r.period_start_ms, value: typeof r[measure] === "number" ? r[measure] : null,
        count: r.count });
      s.total += r.count;
    }
    const all = [...byType.values()].sort((a, b) => b.total - a.total);
    const series = all.slice(0, MAX_SERIES).sort((a, b) => (a.event_type < b.event_type ? -1 : 1))
      .map(({ event_type, points }) => ({ event_type, points: points.sort(byStart) }));
    return { series, hiddenTypes: all.length - series.length };
  }

  function renderRollups() {
    const { measure } = state.rollups;
    const notes = [];
    for (const [period, step] of Object.entries(ROLLUP_PERIODS)) {
      const view = state.rollups[period];
      Object.assign(view, rollupSeries(view.rows, measure));
      drawRollup(period, step, view, measure);
      if (view.error) notes.push(`${period} rollups unavailable: ${view.error}; showing the last answer.`);
      if (view.hiddenTypes) notes.push(`${period}: showing the ${view.series.length} busiest event types; ` +
        `${view.hiddenTypes} more not drawn.`);
    }
    const { hourly, daily } = state.rollups;
    if (!hourly.error && !daily.error && hourly.rows.length + daily.rows.length === 0) {
      notes.push("No rollups in this range yet: `faust -A app batch` computes each hour once it is sealed.");
    }
    const note = $("rollups-note");
    note.textContent = notes.join(" ");
    note.hidden = notes.length === 0;
    $("rollups-summary").textContent = `${fmtInt(hourly.rows.length)} hourly · ${fmtInt(daily.rows.length)} daily rows`;
  }

  function drawRollup(period, step, view, measure) {
    const el = $(`rollup-${period}-chart`);
    // Every period of the range, so that one without a row breaks its line.
    const xs = [];
    if (view.from_ms != null && view.to_ms != null) {
      for (let x = view.from_ms; x < view.to_ms; x += step) xs.push(x);
    }
    const index = new Map(xs.map((x, i) => [x, i]));
    const data = [xs.map((x) => x / 1000)];
    for (const s of view.series) {
      const ys = new Array(xs.length).fill(null);
      for (const p of s.points) if (index.has(p.start_ms)) ys[index.get(p.start_ms)] = p.value;
      data.push(ys);
    }
    const key = JSON.stringify([measure, view.series.map((s) => s.event_type)]);
    if (rollupPlots[period] && key === rollupKeys[period]) {
      rollupPlots[period].setData(data);
    } else {
      if (rollupPlots[period]) rollupPlots[period].destroy();
      rollupPlots[period] = new uPlot({
        width: chartWidth(el), height: 260,
        padding: [null, 28, null, null],
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true } },
        series: [{ label: period === "hourly" ? "hour" : "day" }, ...view.series.map((s) => ({
          label: s.event_type, stroke: colorOf(s.event_type), width: 2,
          points: { show: true, size: 5, fill: colorOf(s.event_type) } }))],
        axes: [period === "hourly" ? { values: timeTicks, incrs: HOUR_INCRS } : { values: dateTicks, incrs: DAY_INCRS },
          { label: measure, size: 70, values: (u, ticks) => ticks.map(fmtNum) }],
        legend: { live: true },
      }, data, el);
      rollupKeys[period] = key;
    }
    el.dataset.measure = measure;
    el.dataset.series = String(view.series.length);
    el.dataset.points = String(view.series.reduce((a, s) => a + s.points.length, 0));
  }

  const HOUR_INCRS = [3600, 7200, 10800, 21600, 43200, 86400];
  const DAY_INCRS = [86400, 172800, 604800, 1209600];
  const dateTicks = (u, ticks) => ticks.map((t) => {
    const d = new Date(t * 1000);
    return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  });

  // ---- throughput and lag ------------------------------------------------------------

  function renderRate() {
    const el = $("rate-chart");
    const data = [state.rate.map((r) => r.t_ms / 1000), state.rate.map((r) => r.eps),
      state.rate.map((r) => r.lag)];
    if (ratePlot == null) {
      ratePlot = new uPlot({
        width: chartWidth(el), height: 220,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: { x: { time: true }, eps: { range: (u, lo, hi) => [0, Math.max(hi, 1)] },
          lag: { range: (u, lo, hi) => [0, Math.max(hi, 1)] } },
        series: [{ label: "time" },
          { label: "events/s", scale: "eps", stroke: "#2563eb", width: 2, fill: "rgba(37,99,235,0.08)",
            value: (u, v) => fmtInt(v == null ? null : Math.round(v)) },
          { label: "lag (records)", scale: "lag", stroke: "#d97706", width: 1.5, spanGaps: true,
            value: (u, v) => fmtInt(v) }],
        axes: [{ values: timeTicks, incrs: RATE_INCRS }, { scale: "eps", size: 70, values: countTicks },
          { scale: "lag", side: 1, size: 70, grid: { show: false }, values: countTicks }],
      }, data, el);
    } else {
      ratePlot.setData(data);
    }
    el.dataset.points = String(state.rate.length);
  }

  // ---- connection, banner, layout ----------------------------------------------------

  function renderConnection() {
    const pill = $("conn");
    const banner = $("banner");
    let mode = "live";
    let message = "";
    if (state.reachable === false) {
      mode = "unreachable";
      message = `Worker unreachable since ${fmtTime(state.unreachableSince)} UTC (${state.error}); ` +
        `retrying every ${POLL_MS / 1000} s. The figures below are from ${fmtTime(state.lastOkAt)} UTC.`;
      if (state.lastOkAt == null) message = `Worker unreachable (${state.error}); retrying every ${POLL_MS / 1000} s.`;
    } else if (state.watermarkStale) {
      mode = "stale";
      const age = state.status && state.status.watermark ? state.status.watermark.age_ms : null;
      message = `The watermark has not advanced for ${fmtDuration(age)}: windows are not closing. ` +
        "Is an input partition stuck, or has the worker stopped reading?";
    }
    document.body.dataset.state = mode;
    pill.textContent = { live: "live", unreachable: "unreachable", stale: "watermark stale" }[mode];
    pill.className = `pill ${mode}`;
    banner.textContent = message;
    banner.hidden = message === "";
    if (state.lastOkAt != null) $("updated").textContent = `updated ${fmtTime(state.lastOkAt)} UTC`;
  }

  function chartWidth(el) {
    return Math.max(320, Math.floor(el.clientWidth));
  }

  function watchSize() {
    const observer = new ResizeObserver(() => {
      if (valuesPlot) valuesPlot.setSize({ width: chartWidth($("window-chart")), height: 340 });
      if (topPlot) topPlot.setSize({ width: chartWidth($("top-chart")), height: 340 });
      if (ratePlot) ratePlot.setSize({ width: chartWidth($("rate-chart")), height: 220 });
      for (const [period, plot] of Object.entries(rollupPlots)) {
        if (plot) plot.setSize({ width: chartWidth($(`rollup-${period}-chart`)), height: 260 });
      }
    });
    observer.observe($("window-chart"));
    observer.observe($("top-chart"));
    observer.observe($("rate-chart"));
    observer.observe($("rollup-hourly-chart"));
    observer.observe($("rollup-daily-chart"));
  }

  // ---- selection ---------------------------------------------------------------------

  function readHash() {
    return new URLSearchParams(location.hash.slice(1));
  }

  function writeHash() {
    const params = new URLSearchParams({ window: state.window || "", measure: state.measure });
    if (specMode()) {
      const { aggregation, window: name, measure, order } = state.top;
      const wanted = { aggregation, agg_window: name, agg_measure: measure, order };
      for (const [k, v] of Object.entries(wanted)) params.set(k, v);
    }
    history.replaceState(null, "", `#${params}`);
  }

  function select(changes) {
    Object.assign(state, changes);
    writeHash();
    // Redraw from nothing now rather than show the old selection for up to a poll.
    state.chart = { window: state.window, measure: state.measure, series: [], hiddenTypes: 0, error: null,
      markers: [], markersDrawn: 0 };
    const el = $("window-chart");
    el.dataset.series = "0";
    el.dataset.points = "0";
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshValues, 0);
  }

  async function refreshValues() {
    const selection = { window: state.window, measure: state.measure };
    if (!selection.window) return;
    const [closed, open] = await Promise.allSettled([
      getJSON(windowPath(selection.window, "closed", `limit=${CLOSED_LIMIT}`)),
      getJSON(windowPath(selection.window, "open")),
    ]);
    if (selection.window === state.window && selection.measure === state.measure) {
      onWindowValues(selection, closed, open);
    }
  }

  function start() {
    const wanted = readHash().get("measure");
    state.measure = MEASURES.includes(wanted) ? wanted : "count";
    $("measure-select").value = state.measure;
    $("window-select").addEventListener("change", (e) => select({ window: e.target.value }));
    $("measure-select").addEventListener("change", (e) => select({ measure: e.target.value }));
    $("agg-select").addEventListener("change", (e) => selectTop({ aggregation: e.target.value }));
    $("agg-window-select").addEventListener("change", (e) => selectTop({ window: e.target.value }));
    $("agg-measure-select").addEventListener("change", (e) => selectTop({ measure: e.target.value }));
    $("agg-order-select").addEventListener("change", (e) => selectTop({ order: e.target.value }));
    $("rollup-measure-select").addEventListener("change", (e) => {
      if (!ROLLUP_MEASURES.includes(e.target.value)) return;
      state.rollups.measure = e.target.value;
      renderRollups();
    });
    watchSize();
    poll(); // its first answer of /v1/aggregations starts the rollups' or the top keys' polling
  }

  start();
})();
