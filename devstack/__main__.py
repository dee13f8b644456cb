"""`python -m devstack up|run`: the embedded stack, alone or with the worker and a demo producer."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from commands.loadgen import parse_fraction
from devstack.ports import PortInUseError, ensure_free
from devstack.stack import Endpoints, Stack
from ops.process import ManagedProcess, ServiceFailedError, supervise
from settings import Settings, exit_on_error, load, load_devstack, redact_userinfo

log = logging.getLogger("devstack")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _faust(*args: str) -> list[str]:
    return [sys.executable, "-m", "faust", "-A", "app", *args]


def _rate(text: str) -> int:
    """Checked here so a bad value fails before the stack starts (0 means as fast as possible)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected events per second as an integer >= 0, got {text!r}")
    return int(text)


def _fraction(text: str) -> str:
    """Checked here so a bad value fails before the stack starts; passed on as typed."""
    try:
        parse_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _banner(settings: Settings, endpoints: Endpoints, stack: Stack, *, with_worker: bool) -> str:
    lake = f"s3://{settings.lake.bucket}/{settings.lake.prefix}"
    lines = [
        "embedded stack is up:",
        f"  broker      {endpoints.broker_url}",
        f"  S3          {endpoints.s3_endpoint}  (lake {lake}, raw events under {lake}events/)",
        f"  Redis       {redact_userinfo(endpoints.redis_url)}  (key prefix {settings.redis.key_prefix!r})",
        f"  service logs {stack.log_dir}",
    ]
    if with_worker:
        lines.insert(1, f"  web         http://{settings.web.host}:{settings.web.port}/")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the broker, S3 and Redis and wait for Ctrl-C")
    run = sub.add_parser("run", help="start the stack, the Faust worker and a demo producer")
    run.add_argument("--rate", type=_rate, default=2000,
                     help="demo events per second (default 2000, 0: as fast as possible)")
    run.add_argument("--malformed", type=_fraction, default="0.001",
                     help="fraction of demo records that are malformed, for the dead-letter topic (default 0.001)")
    run.add_argument("--late", type=_fraction, default="0.001",
                     help="fraction of demo events that arrive late, for the late topic (default 0.001)")
    args = parser.parse_args(argv)
    if args.command == "run" and parse_fraction(args.malformed) + parse_fraction(args.late) > 1:
        run.error("--malformed plus --late must be at most 1")

    env = dict(os.environ)
    settings = exit_on_error(load, env)  # a bad worker setting fails before anything starts
    config = exit_on_error(load_devstack, env)
    logging.basicConfig(level=settings.log_level.upper(), format="[devstack] %(message)s")
    # Readiness probes connect before a server listens; their clients' errors are expected noise.
    for noisy in ("aiokafka", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    stack = Stack(config, buckets=[settings.lake.bucket], env=env)
    status = 0
    try:
        if args.command == "run":
            ensure_free(settings.web.port, host=settings.web.bind, service="the worker's web server",
                        setting="WEB_PORT")
        endpoints = stack.start()
        child_env = {**env, **endpoints.env(), "PYTHONPATH": str(PROJECT_ROOT)}
        children: list[ManagedProcess] = []
        if args.command == "run":
            faust_level = {"warning": "warn"}.get(settings.log_level, settings.log_level)
            worker = ManagedProcess("worker", _faust("worker", "-l", faust_level),
                                    log_path=None, env=child_env, cwd=PROJECT_ROOT)
            producer = ManagedProcess("producer", _faust("produce", "--rate", str(args.rate), "--malformed",
                                                         args.malformed, "--late", args.late),
                                      log_path=None, env=child_env, cwd=PROJECT_ROOT)
            children = [worker, producer]
            for child in children:
                stack.add(child, stop_grace_s=30.0)  # the worker commits and flushes on SIGTERM
                child.start()
        else:
            print("\n".join(f"export {name}={value}" for name, value in endpoints.env().items()))
        print(_banner(settings, endpoints, stack, with_worker=args.command == "run"), flush=True)
        status = supervise(children, restart={"worker"})
    except KeyboardInterrupt:
        log.info("stopping")
    except (PortInUseError, ServiceFailedError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
