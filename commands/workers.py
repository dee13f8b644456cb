"""`python -m commands.workers --count N`: N worker processes on one host, so that its cores are all used.

One worker process runs on one core (Python's GIL); partitions bound how many are useful. Each
child is `faust -A app worker` with its own state directory (`STATE_DIR/worker-<i>`) and web port
(`WEB_PORT + i`: the first keeps the platform's `$PORT`), restarted whenever it exits (the worker
is crash-only), except when its first start ends with status 2, a configuration error: then all stop, with
status 2 (ops/process.supervise). SIGTERM or Ctrl-C stops them all, each with its usual clean stop.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from ops.process import ManagedProcess, supervise
from settings import exit_on_error, load

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 60.0
log = logging.getLogger("workers")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def child_env(env: dict[str, str], index: int, state_dir: Path, web_port: int) -> dict[str, str]:
    return {**env, "STATE_DIR": str(state_dir / f"worker-{index}"), "WEB_PORT": str(web_port + index),
            "PYTHONPATH": env.get("PYTHONPATH") or str(ROOT)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commands.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: the number of cores)")
    parser.add_argument("--loglevel", default="info", help="faust's log level for the workers (default info)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    env = dict(os.environ)
    settings = exit_on_error(load, env)  # a bad setting fails here, once, not in N children
    if settings.web.port + args.count - 1 > 65535:
        parser.error(f"WEB_PORT {settings.web.port} + {args.count} workers goes beyond port 65535")
    logging.basicConfig(level=settings.log_level.upper(), format="[workers] %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    children = [ManagedProcess(f"worker-{i}", [sys.executable, "-m", "faust", "-A", "app", "worker", "-l",
                                              args.loglevel],
                               log_path=None, env=child_env(env, i, settings.state_dir, settings.web.port),
                               cwd=ROOT) for i in range(args.count)]
    status = 0
    try:
        for child in children:
            child.start()
        log.info("%d workers on ports %d-%d", args.count, settings.web.port, settings.web.port + args.count - 1)
        status = supervise(children, restart={child.name for child in children})
    except KeyboardInterrupt:
        log.info("stopping %d workers", args.count)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in children:  # SIGTERM to all first, so that they leave their groups together
            if child.exit_code() is None and child.pid is not None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            child.stop(grace_s=STOP_GRACE_S)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
