"""The README's reference tables are the code's: settings (generated from settings.SETTINGS_DOC), endpoints
(what the web server routes), Redis keys, what answers without the token; docs/operations.md's metrics (what
/metrics exposes); `make help` lists every target; the README stays short and every link in it and in docs/
reaches a file and a heading."""

import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from formats.batch import BATCH_COUNTERS, BatchStatus
from ops.metrics import PipelineMetrics
from settings import markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


def _table_after(heading: str, text: str = README) -> list[str]:
    """The first column of the first markdown table after `heading`."""
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines():
        if line.startswith("|"):
            rows.append(line.split("|")[1].strip())
        elif rows:
            break
    return rows[2:]  # without the header and the separator


def test_settings_table_is_current() -> None:
    assert markdown_table() in README


def test_metrics_table_lists_exactly_what_metrics_exposes() -> None:
    documented = {name for cell in _table_after("## Metrics", OPERATIONS) for name in re.findall(r"`([a-z_]+)`", cell)}
    metrics = PipelineMetrics()
    live = metrics.live
    live.low_frontier_ms = lambda: 1  # present only once known
    live.watermark_age_s = lambda: 0.0
    status = BatchStatus(last_success_ms=1, last_failure_ms=1, duration_ms=1, last_sealed_hour_ms=1,
                         counters=dict.fromkeys(BATCH_COUNTERS, 1))
    live.batch_status = lambda: status  # present once the batch job has run
    exposed = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        suffix = {"counter": "_total"}.get(family.type, "")
        if not family.name.endswith("_created"):  # prometheus_client's creation-time series
            exposed.add(family.name + suffix)
    assert documented == exposed


def test_endpoint_table_lists_exactly_what_the_web_server_routes() -> None:
    documented = set()
    for cell in _table_after("| endpoint | answer |"):
        method, path = cell.strip("`").split(" ", 1)
        documented.add(re.sub(r"[\[?].*", "", path))
    views = (ROOT / "web" / "views.py").read_text()
    routes = {f"/v1{route}" for route in re.findall(r'@blueprint\.route\("([^"]+)"', views) if "tail" not in route}
    assert documented == routes | {"/metrics", "/"}


def test_make_help_lists_every_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M)) - {"install"}
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert targets <= {line.split()[0] for line in shown.splitlines() if line.strip()}


def test_redis_table_lists_exactly_the_keys_of_the_redis_layout() -> None:
    """One table, no blank line in it (which would end it), and every key formats/redis.py declares."""
    import formats.redis

    declared = set(re.findall(r"^    P (\S+)$", formats.redis.__doc__ or "", re.MULTILINE))
    documented = {cell.removeprefix("`P` `").removesuffix("`") for cell in _table_after("**Redis**, with `P`")}
    assert declared and documented == declared


def test_what_stays_open_without_the_token_is_said_once_and_is_the_codes() -> None:
    """The README's one list of what answers without WEB_AUTH_TOKEN: the views marked open_to_all and the
    dashboard's files."""
    import web.views
    from web.dashboard import ASSETS

    found = re.search(r"These\s+stay open without it:", README)
    assert found
    sentence = README[found.start():].split(". ")[0]
    documented = set(re.findall(r"`(/[^`]*)`", sentence))
    open_views = {f"/v1{route.uri}" for route in web.views.blueprint.routes if route.handler.open_to_all}
    code = open_views | {"/metrics"} | {"/static/..." if asset.url.startswith("/static/") else asset.url
                                        for asset in ASSETS}
    assert web.views.MetricsView.open_to_all
    assert documented == code
    assert README.count("stay open") == 2  # this list, and the settings table pointing to it


def test_the_readme_is_short() -> None:
    assert README.count("\n") <= 300


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_the_readme_and_docs_reaches_a_file_and_a_heading() -> None:
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.MULTILINE)
                if anchor not in {_anchor(heading) for heading in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_production_environment_block_is_accepted_as_written() -> None:
    """The README's production settings for Kafka over SASL_SSL, rediss:// and S3: settings.py takes them,
    the secrets (`...`) filled in."""
    from settings import load

    block = README[README.index("## Deploy"):].split("```sh\n", 1)[1].split("```", 1)[0]
    env = {}
    for line in block.splitlines():
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        env[name] = "s3cret-value-0123456789" if value == "..." else value
    settings = load(env)
    assert (settings.kafka.security_protocol, settings.kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert settings.redis.url.startswith("rediss://") and settings.lake.bucket == "your-lake-bucket"
    assert settings.web.bind == "0.0.0.0" and settings.web.auth_token


def test_faust_lists_no_agents_as_the_intro_says() -> None:
    """The README's intro: the stages are services of their own, not faust agents (`faust -A app agents`)."""
    import os
    import sys

    assert "(`faust -A app\nagents` lists none)" in README or "`faust -A app agents` lists none" in README
    shown = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "agents"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    rows = [line for line in shown.splitlines() if line.startswith("|")]
    assert rows == ["| name | topic | help |"], shown
