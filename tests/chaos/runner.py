"""The randomized chaos suite: real worker processes on the embedded stack, faults from a seed,
exact ground truth after every iteration.

Each iteration (tests/chaos/plan.py) feeds a fresh set of topics, a bucket and a Redis prefix
with the ground-truth event set of tests/e2e/groundtruth.py (on-time events with disorder,
hostile and malformed records, maybe a 2 MB record; then late events once every partition's
frontier has settled; then one sentinel per partition, which closes every window), while a
second thread injects the plan's faults. After the last fault the pipeline must drain within
DRAIN_DEADLINE_S (a stall loses data as surely as a wrong count); then the Parquet rows, the
Redis values, the dead-letter and late topics and the raw archive are compared with the
reference, and every worker must stop on SIGTERM within STOP_DEADLINE_S.

    python tests/chaos/runner.py --iterations 30 --seed 7      (make chaos ITERATIONS=30 SEED=7)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "e2e", HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import checks  # noqa: E402
import clickref  # noqa: E402
import groundtruth as gt  # noqa: E402
import specref  # noqa: E402
from pipeline_harness import (  # noqa: E402
    Names,
    OwnRedis,
    Worker,
    create_topics,
    names_for,
    produce,
    read_aggregates,
    read_archive,
    read_spec_archive,
    read_spec_rows,
    read_topic,
    run,
    web_port,
    worker_env,
)
from plan import Fault, Plan, make_plan  # noqa: E402

from agents.runner import CRASH_EXIT_STATUS, FENCED  # noqa: E402
from devstack.ports import free_port_block  # noqa: E402
from devstack.stack import ISOLATED_PORT_COUNT, Endpoints, Stack, isolated_settings, without_service_urls  # noqa: E402
from settings import load_devstack  # noqa: E402
from sinks.redis_store import RedisWindowStore  # noqa: E402

WINDOW_MS = {name: size for name, size, _ in gt.WINDOWS}
STEP_DEADLINE_S = 240.0  # a phase may wait out several restarts and rebalances
DRAIN_DEADLINE_S = 180.0  # after the last fault
STOP_DEADLINE_S = 30.0
CHUNK = 300  # records per produce call; phase 1 is spread over a few seconds so faults land in it
MAX_CHUNKS_WITH_PAUSES = 60  # a larger event set is sent at full speed after the first chunks
SPECS = {"iot": specref, "clickstream": clickref}  # the shipped specs --spec runs, with their records
SPEC_LATEST_N = 60  # windows per key read back from a spec's Redis index (more than any key has)


def stopped_cleanly(status: int) -> bool:
    """0, or killed by SIGTERM's default action: a worker signalled while Python was still importing
    (a join followed at once by a leave) has no handler yet. mode installs its handlers in the
    worker's first start, before any service of the app starts, so nothing had begun."""
    return status in (0, -signal.SIGTERM)


@dataclass
class Slot:
    """One worker identity: its state directory and port survive its restarts (same machine)."""

    index: int
    worker: Worker
    expected_exit: bool = True  # False while it runs: an exit we did not cause is a bug
    paused: bool = False  # frozen by a pause fault (SIGSTOP) until it is resumed


@dataclass
class Iteration:
    plan: Plan
    stack: Endpoints
    redis: OwnRedis
    s3_pid: int
    service_thread: ThreadPoolExecutor
    directory: Path
    problems: list[str] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    phase_started: dict[str, float] = field(default_factory=dict)
    status_errors: dict[int, str] = field(default_factory=dict)
    flood: bool = False  # a malformed record after every record
    spec: str | None = None  # a shipped spec (SPECS) instead of the article's job
    timers: list[threading.Thread] = field(default_factory=list)
    last_fault_at: float = 0.0
    fenced: int = 0  # workers that stopped because a successor fenced them (after a pause)

    # -- workers --------------------------------------------------------------------------------

    def env(self, index: int) -> dict[str, str]:
        env = worker_env(self.stack, self.names, self.directory / f"state{index}", web_port())
        env["REDIS_URL"] = self.redis.url
        if self.spec:
            env["AGGREGATIONS"] = str(SPECS[self.spec].SPEC_PATH)
        return env

    def new_worker(self) -> Slot:
        index = len(self.slots)
        slot = Slot(index, Worker(self.env(index), self.directory / f"worker{index}.log"))
        self.slots.append(slot)
        self.start(slot)
        return slot

    def start(self, slot: Slot) -> None:
        slot.worker.start()
        slot.expected_exit = False

    def alive(self) -> list[Slot]:
        return [s for s in self.slots if s.worker.process is not None and s.worker.process.poll() is None]

    def kill(self, slot: Slot) -> None:
        slot.expected_exit = True
        slot.worker.kill()

    def terminate(self, slot: Slot) -> None:
        """SIGTERM; the worker must be gone within STOP_DEADLINE_S."""
        slot.expected_exit = True
        process = slot.worker.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.problems.append(f"worker{slot.index} did not stop within {STOP_DEADLINE_S:.0f}s of SIGTERM")
            process.kill()
            process.wait()
            return
        if not stopped_cleanly(status):
            self.problems.append(f"worker{slot.index} stopped on SIGTERM with status {status}, not 0")

    def watch_exits(self) -> None:
        """A worker that exits by itself crashed: record it, and restart it as a supervisor would."""
        with self.lock:
            for slot in self.slots:
                process = slot.worker.process
                if not slot.expected_exit and process is not None and process.poll() is not None:
                    tail = slot.worker.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    if process.returncode == CRASH_EXIT_STATUS and any(FENCED in line for line in tail):
                        self.fenced += 1  # a zombie's expected end: its supervisor restarts it
                    else:
                        self.problems.append(f"worker{slot.index} exited by itself with status {process.returncode}: "
                                             + " | ".join(line.strip()[:300] for line in tail))
                    self.start(slot)

    def statuses(self) -> list[dict[str, Any]]:
        found = []
        self.status_errors = {}
        for slot in self.alive():
            try:
                found.append(slot.worker.status())
            except Exception as exc:  # noqa: BLE001 - starting, stopping, or stuck: the waits say which
                self.status_errors[slot.index] = repr(exc)[:200]
        return found

    # -- faults ---------------------------------------------------------------------------------

    def run_faults(self) -> None:
        rng = random.Random(self.plan.seed * 7919)
        try:
            for fault in self.plan.faults:
                while fault.phase not in self.phase_started:
                    time.sleep(0.05)
                at = self.phase_started[fault.phase] + fault.delay_s
                time.sleep(max(0.0, at - time.monotonic()))
                self.apply(fault, rng)
                self.last_fault_at = time.monotonic()
            for timer in self.timers:
                timer.join()
            self.last_fault_at = time.monotonic()
        except Exception:  # noqa: BLE001 - a harness error fails the iteration with its trace
            self.problems.append("fault thread failed: " + traceback.format_exc(limit=3).replace("\n", " | "))

    def apply(self, fault: Fault, rng: random.Random) -> None:
        if fault.kind == "kill":
            slot = self._pick_alive(rng)
            if slot is None:
                self.problems.append("no live worker to kill within the deadline")
                return
            with self.lock:
                self.kill(slot)
            if fault.restart == "immediate":
                with self.lock:
                    self.start(slot)
                if fault.kill_again_after_s is not None:
                    time.sleep(fault.kill_again_after_s)
                    with self.lock:
                        self.kill(slot)
                        self.start(slot)
            elif fault.restart == "delayed":
                self._later(fault.restart_after_s, lambda: self.start(slot))
        elif fault.kind == "join":
            with self.lock:
                self.new_worker()
        elif fault.kind == "leave":
            slot = self._pick_alive(rng, at_least=2)
            if slot is not None:
                self.terminate(slot)
        elif fault.kind in ("s3-freeze", "redis-freeze"):
            # The outage lasts while the next faults go on (a kill during it is planned).
            pid = self.s3_pid if fault.kind == "s3-freeze" else self.redis.process.pid  # type: ignore[union-attr]
            os.killpg(pid, signal.SIGSTOP)
            self._later(fault.duration_s, lambda: os.killpg(pid, signal.SIGCONT), locked=False)
        elif fault.kind == "pause":
            slot = self._pick_alive(rng)
            if slot is None:
                self.problems.append("no live worker to pause within the deadline")
                return
            process = slot.worker.process
            assert process is not None
            with self.lock:
                slot.paused = True
                process.send_signal(signal.SIGSTOP)

            def resume() -> None:
                if process.poll() is None:
                    process.send_signal(signal.SIGCONT)
                slot.paused = False
            self._later(fault.duration_s, resume)
        elif fault.kind == "redis-restart":
            # Started from the run's long-lived thread: a child's PR_SET_PDEATHSIG fires when the
            # *thread* that started it ends, and this one ends with the iteration.
            self.service_thread.submit(self.redis.stop).result()
            self._later(fault.duration_s, lambda: self.service_thread.submit(self.redis.start).result(), locked=False)

    def _pick_alive(self, rng: random.Random, at_least: int = 1) -> Slot | None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                alive = [slot for slot in self.alive() if not slot.paused]
                if len(alive) >= at_least:
                    return rng.choice(sorted(alive, key=lambda s: s.index))
            if at_least > 1:
                return None
            time.sleep(0.2)
        return None

    def _later(self, delay_s: float, action: Any, *, locked: bool = True) -> None:
        def run_later() -> None:
            time.sleep(delay_s)
            try:
                if locked:
                    with self.lock:
                        action()
                else:
                    action()
            except Exception:  # noqa: BLE001 - a harness error fails the iteration with its trace
                self.problems.append("delayed fault action failed: "
                                     + traceback.format_exc(limit=3).replace("\n", " | "))
        thread = threading.Thread(target=run_later, daemon=True)
        thread.start()
        self.timers.append(thread)

    # -- waiting --------------------------------------------------------------------------------

    def wait(self, condition: Any, what: str, deadline_s: float = STEP_DEADLINE_S, detail: Any = None) -> bool:
        deadline = time.monotonic() + deadline_s
        error: Exception | None = None
        while time.monotonic() < deadline:
            self.watch_exits()
            try:
                if condition():
                    return True
            except Exception as exc:  # noqa: BLE001 - a store or worker may be down for now
                error = exc
            time.sleep(0.25)
        seen = ""
        with contextlib.suppress(Exception):
            seen = (f" (last seen: {detail()}; last error: {error!r}; status errors: {self.status_errors})"
                    if detail else f" (last error: {error!r})")
        self.problems.append(f"timed out after {deadline_s:.0f}s waiting for {what}{seen}; task dumps "
                             "(kill -USR1) in the worker logs")
        for slot in self.alive():
            with contextlib.suppress(Exception):
                slot.worker.process.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]
        time.sleep(1.0)
        return False

    def read_upto(self) -> dict[int, int]:
        done: dict[int, int] = {}
        for status in self.statuses():
            for p, offset in status["input_offsets"].items():
                done[int(p)] = max(done.get(int(p), -1), offset)
        return done

    def processed(self, last: dict[int, int]) -> bool:
        done = self.read_upto()
        return all(done.get(p, -1) >= offset for p, offset in last.items())

    def frontiers(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for status in self.statuses():
            for p, frontier in status["frontiers_ms"].items():
                found[int(p)] = max(found.get(int(p), frontier), frontier)
        return found

    # -- the run ----------------------------------------------------------------------------------

    @property
    def names(self) -> Names:
        return names_for(f"chaos-{self.plan.seed}")

    def produce_paced(self, records: list[gt.Produced]) -> list[int]:
        """Phase 1 in chunks with pauses, so that the faults land in it; their offsets."""
        offsets: list[int] = []
        paced = CHUNK * MAX_CHUNKS_WITH_PAUSES
        for start in range(0, min(len(records), paced), CHUNK):
            offsets += run(produce(self.stack, self.names.events, records[start:start + CHUNK]))
            self.watch_exits()
            time.sleep(0.2)
        if len(records) > paced:
            offsets += run(produce(self.stack, self.names.events, records[paced:]))
        return offsets

    def execute(self) -> None:
        if self.spec:
            self.execute_spec()
            return
        names, plan = self.names, self.plan
        s3 = self.stack.s3_client()
        s3.create_bucket(Bucket=names.bucket)
        run(create_topics(self.stack, names))
        on_time, reasons = gt.phase1(plan.per_partition, seed=plan.seed)
        if plan.oversized:
            on_time, reasons = gt.with_oversized_record(on_time, reasons, plan.seed)
        if self.flood:
            on_time, reasons = gt.with_malformed_flood(on_time, reasons)
        for _ in range(plan.initial_workers):
            self.new_worker()
        faults = threading.Thread(target=self.run_faults, daemon=True)
        faults.start()

        self.phase_started["phase1"] = time.monotonic()
        offsets1 = self.produce_paced(on_time)
        bad = {i for i, _ in reasons}
        valid1 = [(r.partition, o, gt.decode_valid(r)) for i, (r, o) in enumerate(zip(on_time, offsets1, strict=True))
                  if i not in bad]
        frontier_ms = gt.frontier_after([v for _, _, v in valid1])  # type: ignore[misc]
        last = {r.partition: o for r, o in zip(on_time, offsets1, strict=True)}
        if not (self.wait(lambda: self.processed(last), f"the on-time events to be read up to {last}",
                          detail=self.read_upto)
                and self.wait(lambda: self.frontiers() == dict.fromkeys(range(gt.PARTITIONS), frontier_ms),
                              f"every partition's frontier to reach {frontier_ms}", detail=self.frontiers)):
            return

        self.phase_started["phase2"] = time.monotonic()
        late_phase = gt.phase2(frontier_ms, seed=plan.seed)
        offsets2 = run(produce(self.stack, names.events, late_phase))
        valid2 = [(r.partition, o, gt.decode_valid(r)) for r, o in zip(late_phase, offsets2, strict=True)]
        last2 = {p: o for p, o, _ in valid2}
        if not self.wait(lambda: self.processed(last2), f"the late events to be read up to {last2}",
                         detail=self.read_upto):
            return
        self.phase_started["export"] = time.monotonic()
        sentinel_offsets = run(produce(self.stack, names.events, gt.sentinels()))

        expected = gt.reference([v for _, _, v in valid1], valid2, frontier_ms)  # type: ignore[arg-type]
        valid_positions = ({(p, o) for p, o, _ in valid1} | {(p, o) for p, o, _ in valid2}
                           | set(enumerate(sentinel_offsets)))
        dead = [(on_time[i].partition, offsets1[i], on_time[i].value, reason) for i, reason in reasons]
        faults.join(timeout=STEP_DEADLINE_S)
        with self.lock:
            if not self.alive():
                self.start(self.slots[0])

        store = RedisWindowStore(self.redis.url, names.redis_prefix, ttl_ms=3_600_000, latest_n=60)

        def drained() -> bool:
            files = read_aggregates(s3, names.bucket)
            if sum(len(rows) for rows in files.values()) < len(expected.rows):
                return False
            if checks.redis_windows_written(store, expected.rows) < len(expected.rows):
                return False
            if sum(len(rows) for rows in read_archive(s3, names.bucket).values()) < len(valid_positions):
                return False
            return (len(run(read_topic(self.stack, names.dlq))) >= len(dead)
                    and len(run(read_topic(self.stack, names.late))) >= len(expected.late))

        store.open()
        try:
            self.wait(drained, "every output to be written after the last fault", DRAIN_DEADLINE_S)
            self.problems += checks.aggregates(read_aggregates(s3, names.bucket), expected.rows, WINDOW_MS)
            self.problems += checks.redis_rows(store, expected.rows, WINDOW_MS)
        finally:
            store.close()
        self.problems += checks.dead_letters(run(read_topic(self.stack, names.dlq)), dead)
        self.problems += checks.late_records(run(read_topic(self.stack, names.late)), expected.late)
        self.problems += checks.archive(read_archive(s3, names.bucket), valid_positions)

    def execute_spec(self) -> None:
        """The same run on a shipped spec (tests/e2e/specref.py, clickref.py), against its reference."""
        names, plan = self.names, self.plan
        assert self.spec is not None
        specref = SPECS[self.spec]
        spec = specref.spec()
        layouts = {a.name: a.layout() for a in spec.aggregations}
        s3 = self.stack.s3_client()
        s3.create_bucket(Bucket=names.bucket)
        run(create_topics(self.stack, names))
        on_time = specref.phase1(plan.per_partition, seed=plan.seed)
        if plan.oversized:
            on_time = specref.with_oversized_record(on_time, plan.seed)
        for _ in range(plan.initial_workers):
            self.new_worker()
        faults = threading.Thread(target=self.run_faults, daemon=True)
        faults.start()

        self.phase_started["phase1"] = time.monotonic()
        offsets1 = self.produce_paced([s.record for s in on_time])
        frontier_ms = specref.frontier_after(on_time)
        last = {s.record.partition: o for s, o in zip(on_time, offsets1, strict=True)}
        if not (self.wait(lambda: self.processed(last), f"the on-time readings to be read up to {last}",
                          detail=self.read_upto)
                and self.wait(lambda: self.frontiers() == dict.fromkeys(range(gt.PARTITIONS), frontier_ms),
                              f"every partition's frontier to reach {frontier_ms}", detail=self.frontiers)):
            return

        self.phase_started["phase2"] = time.monotonic()
        late_phase = specref.phase2(frontier_ms, seed=plan.seed)
        offsets2 = run(produce(self.stack, names.events, [s.record for s in late_phase]))
        last2 = {s.record.partition: o for s, o in zip(late_phase, offsets2, strict=True)}
        if not self.wait(lambda: self.processed(last2), f"the late readings to be read up to {last2}",
                         detail=self.read_upto):
            return
        self.phase_started["export"] = time.monotonic()
        sentinel_offsets = run(produce(self.stack, names.events, [s.record for s in specref.sentinels()]))
        expected = specref.reference(list(zip(on_time, offsets1, strict=True)),
                                     list(zip(late_phase, offsets2, strict=True)), frontier_ms, sentinel_offsets)
        index = specref.redis_expected(expected.rows, SPEC_LATEST_N)
        faults.join(timeout=STEP_DEADLINE_S)
        with self.lock:
            if not self.alive():
                self.start(self.slots[0])

        store = RedisWindowStore(self.redis.url, names.redis_prefix, ttl_ms=3_600_000, latest_n=SPEC_LATEST_N)

        def drained() -> bool:
            if sum(len(rows) for rows in read_spec_rows(s3, names.bucket, spec).values()) < len(expected.rows):
                return False
            if checks.spec_redis_written(store, index, layouts) < len(index):
                return False
            archived = sum(len(c.offsets) for (c,) in read_spec_archive(s3, names.bucket).values())
            return (archived >= len(expected.archived)
                    and len(run(read_topic(self.stack, names.dlq))) >= len(expected.dead)
                    and len(run(read_topic(self.stack, names.late))) >= len(expected.late))

        store.open()
        try:
            self.wait(drained, "every output to be written after the last fault", DRAIN_DEADLINE_S)
            self.problems += checks.spec_rows(read_spec_rows(s3, names.bucket, spec), expected.rows)
            self.problems += checks.spec_redis(store, index, layouts)
        finally:
            store.close()
        self.problems += checks.dead_letters(run(read_topic(self.stack, names.dlq)), expected.dead)
        self.problems += checks.late_records(run(read_topic(self.stack, names.late)), expected.late)
        self.problems += checks.spec_archive(read_spec_archive(s3, names.bucket), expected.archived)

    def recover_stores(self) -> None:
        """Whatever happened, the next iteration starts with S3 and Redis up."""
        for timer in self.timers:
            timer.join(timeout=60)
        for pid in (self.s3_pid, self.redis.process.pid if self.redis.process else None):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGCONT)
        if self.redis.process is None or self.redis.process.exit_code() is not None:
            self.service_thread.submit(self.redis.start).result()

    def stop_all(self) -> None:
        self.watch_exits()
        with self.lock:
            for slot in self.slots:  # a harness error may leave one frozen
                if slot.paused and slot.worker.process is not None and slot.worker.process.poll() is None:
                    slot.worker.process.send_signal(signal.SIGCONT)
            for slot in self.alive():
                slot.expected_exit = True
                slot.worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + STOP_DEADLINE_S
            for slot in self.slots:
                process = slot.worker.process
                if process is None or process.poll() is not None:
                    continue
                try:
                    status = process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.problems.append(f"worker{slot.index} did not stop within {STOP_DEADLINE_S:.0f}s of SIGTERM")
                    process.kill()
                    process.wait()
                    continue
                if not stopped_cleanly(status):
                    self.problems.append(f"worker{slot.index} stopped on SIGTERM with status {status}, not 0")


@dataclass
class ChaosStack:
    """The embedded stack for a chaos run, with handles on the stores the faults stop."""

    endpoints: Endpoints
    redis: OwnRedis
    s3_pid: int
    service_thread: ThreadPoolExecutor  # lives as long as the stack: it (re)starts Redis


@contextlib.contextmanager
def chaos_stack(directory: Path) -> Any:
    env = without_service_urls(os.environ)
    config = load_devstack({**env, **isolated_settings(str(directory / "stack"), free_port_block(ISOLATED_PORT_COUNT),
                                                       "memory")})
    stack = Stack(config, buckets=[], env=env)
    with stack as endpoints:
        s3_pid = stack.pid("s3")
        assert s3_pid is not None
        redis = OwnRedis(directory / "redis")
        service_thread = ThreadPoolExecutor(max_workers=1)
        service_thread.submit(redis.start).result()
        try:
            yield ChaosStack(endpoints, redis, s3_pid, service_thread)
        finally:
            service_thread.submit(redis.stop).result()
            service_thread.shutdown()


def run_iteration(stack: ChaosStack, plan: Plan, directory: Path, flood: bool = False,
                  spec: str | None = None) -> tuple[list[str], float, int]:
    directory.mkdir(parents=True, exist_ok=True)
    iteration = Iteration(plan, stack.endpoints, stack.redis, stack.s3_pid, stack.service_thread, directory,
                          flood=flood, spec=spec)
    started = time.monotonic()
    try:
        iteration.execute()
    except Exception:  # noqa: BLE001 - reported as the iteration's failure
        iteration.problems.append("harness error: " + traceback.format_exc(limit=4).replace("\n", " | "))
    finally:
        iteration.stop_all()
        iteration.recover_stores()
    return iteration.problems, time.monotonic() - started, iteration.fenced


def run_chaos(iterations: int, seed: int, directory: Path, out: Any = sys.stdout,
              seeds: list[int] | None = None, per_partition: int | None = None, flood: bool = False,
              spec: str | None = None) -> int:
    """Run the iterations; print one line each; return how many failed."""
    rng = random.Random(seed)
    seeds = seeds or [rng.randrange(1, 10**6) for _ in range(iterations)]
    job = f"the {spec} spec" if spec else "the article's job"
    print(f"chaos: {iterations} iterations of {job}, seed {seed} (iteration seeds {seeds}); logs in {directory}",
          file=out, flush=True)
    failed = kills = topology = pauses = fenced = 0
    with chaos_stack(directory) as stack:
        # Zombies only where the broker fences them (docs/development.md, Brokers): Tansu has no transactions.
        with_pauses = stack.endpoints.broker != "tansu"
        for index, iteration_seed in enumerate(seeds, 1):
            plan = make_plan(iteration_seed, pauses=with_pauses)
            if per_partition:
                plan = dataclasses.replace(plan, per_partition=per_partition)
            kills += plan.kills
            topology += plan.topology_changes > 0
            pauses += plan.pauses
            where = directory / f"iteration-{index:03d}-{iteration_seed}"
            problems, elapsed, zombies = run_iteration(stack, plan, where, flood, spec)
            fenced += zombies
            verdict = "PASS" if not problems else "FAIL"
            print(f"iteration {index}/{iterations} seed {iteration_seed}: {plan.describe()} -> {verdict} "
                  f"in {elapsed:.0f}s", file=out, flush=True)
            for problem in problems:
                print(f"    {problem}", file=out, flush=True)
            failed += bool(problems)
    print(f"chaos summary: {iterations - failed} of {iterations} passed, seed {seed}, {kills} SIGKILLs, "
          f"{topology} iterations with a worker joining or leaving, {pauses} pauses ({fenced} zombies fenced)",
          file=out, flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/chaos/runner.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed, printed")
    parser.add_argument("--dir", type=Path, default=None, help="logs and state (default: a new temporary directory)")
    parser.add_argument("--only", type=int, action="append", help="run this iteration seed (repeatable)")
    parser.add_argument("--per-partition", type=int, help="on-time events per partition (default: from the seed)")
    parser.add_argument("--flood", action="store_true", help="a malformed record after every record")
    parser.add_argument("--spec", choices=tuple(SPECS), help="run a shipped spec instead of the article's job")
    args = parser.parse_args(argv)
    if args.spec and args.flood:
        parser.error("--flood is for the article's job only")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the harness's own clients: expected noise
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    iterations = len(args.only) if args.only else args.iterations
    return 1 if run_chaos(iterations, seed, directory, seeds=args.only, per_partition=args.per_partition,
                          flood=args.flood, spec=args.spec) else 0


if __name__ == "__main__":
    raise SystemExit(main())
