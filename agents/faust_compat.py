"""Where the pipeline leans on faust-streaming beyond what its docs promise: one place to re-read on
an upgrade.

- `WorkerBoot`: faust's worker without its Kafka consumer and producer (the stages own their Kafka
  path, NOTES.md says why), with the pipeline service started and stopped beside faust's web server.
  It overrides `BootStrategy`, a class attribute faust documents only in its source.
- `QuietWorker`: faust's worker without its terminal spinner, which sets the root logger to DEBUG so
  that it can spin on every record: every debug call of every library (aiokafka logs each send)
  then built a LogRecord only to drop it (a tenth of the CPU with 10,000 event types).
- `check_version`: the app refuses to start on a faust version it was not tested with.
- `refuse_worker_overrides`: `faust worker -b/-p/-h/--web-bind/--web-transport/--without-web` would bypass
  settings.py (and the pipeline's own clients would not follow them): they are refused with one line.
- `refuse_leftover_commands`: faust's `send` writes with faust's own producer, which has none of the
  pipeline's Kafka settings (TLS, SASL, idempotence): it is replaced by a command that says so in one line.
  faust imports the app (`-A app`) before it looks the subcommand up, so the replacement is in time. The
  worker's flags that `refuse_worker_overrides` refuses are hidden from `worker --help` too, which
  advertised `-h ... (default: 0.0.0.0)`.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import faust
from faust.app.base import BootStrategy

TESTED_VERSION = "0.15.3"


class QuietWorker(faust.Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None  # the root logger then keeps the level of `-l` (faust's _setup_spinner_handler)


def check_version(found: str = faust.__version__) -> None:
    if found != TESTED_VERSION:
        raise RuntimeError(f"faust-streaming {found} is installed, but this pipeline is tested with {TESTED_VERSION} "
                           "only (see faust_compat.py before changing the pin in requirements.txt)")


class WorkerBoot(BootStrategy):
    enable_kafka_consumer = False
    enable_kafka_producer = False

    def server(self) -> Any:
        return [*super().server(), *self.app.extra_services()]  # type: ignore[attr-defined]


def refuse_worker_overrides(conf: Any, expected: dict[str, Any]) -> str | None:
    """The first faust setting a command-line flag changed from what settings.py gave, as an error line."""
    flags = {"broker": ("-b/--broker", "BROKER_URL"), "web_port": ("-p/--web-port", "WEB_PORT"),
             "web_bind": ("--web-bind", "WEB_BIND"), "web_host": ("-h/--web-host", "WEB_HOST"),
             "web_transport": ("--web-transport", "WEB_BIND and WEB_PORT"),
             "web_enabled": ("--without-web", "the web server (it serves health, metrics and the API)")}
    for name, want in expected.items():
        got = getattr(conf, name)
        if name == "broker":
            got = [str(url) for url in got]
        if got != want:
            flag, setting = flags[name]
            return (f"error: faust's {flag} is not supported here: it bypasses the pipeline's settings; "
                    f"set {setting} instead")
    return None


SEND_REFUSED = ("error: faust's send is not supported here: it writes with faust's own producer, without the "
                "pipeline's Kafka settings (TLS, SASL, idempotence); use `faust -A app produce` to send events")


# faust worker's options that refuse_worker_overrides refuses (click's parameter names).
WORKER_FLAGS_REFUSED = frozenset({"with_web", "web_port", "web_transport", "web_bind", "web_host"})


def refuse_leftover_commands() -> None:
    """Replace faust's commands that bypass the settings by one that refuses in one line (status 2)."""
    # Imported here, not with this module: faust.cli.base binds sys.argv as a default argument when first
    # imported, and app.main() (the console script) edits sys.argv before that.
    from faust.cli.faust import cli

    @click.command(name="send", help="Not available: use `faust -A app produce`.",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def send() -> NoReturn:
        print(SEND_REFUSED, file=sys.stderr, flush=True)
        raise SystemExit(2)

    cli.add_command(send)
    for param in cli.commands["worker"].params:
        if param.name in WORKER_FLAGS_REFUSED:
            param.hidden = True  # type: ignore[attr-defined]  # click Options have it; the flag stays refused

