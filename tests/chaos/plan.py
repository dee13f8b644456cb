"""What one chaos iteration does: its event set and its faults, all drawn from one seed.

Faults are tied to the phase of the run they strike in (while the on-time events stream in,
while the late ones do, or while the closed windows are exported) with a delay into it, so
that a seed replays the same plan. Kinds:

- kill: SIGKILL a worker, then restart it at once, after a delay, or never (a worker leaving
  by crashing); an immediate restart may be killed again within seconds (startup, restore);
- join: a new worker joins the group (up to MAX_WORKERS);
- leave: a worker is stopped with SIGTERM and must exit within the deadline;
- outage: S3 or Redis frozen (SIGSTOP) for a while, or Redis stopped and started again;
- pause: a worker frozen (SIGSTOP) past the session timeout, then resumed (SIGCONT): with another
  worker, a zombie, whose partitions were taken over meanwhile (on a broker with transactions: it
  is fenced, and stops, or rejoins first).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MAX_WORKERS = 3
MIN_KILLS = 5
PHASES = ("phase1", "phase2", "export")


@dataclass(frozen=True, slots=True)
class Fault:
    phase: str
    delay_s: float
    kind: str  # kill | join | leave | s3-freeze | redis-freeze | redis-restart | pause
    restart: str = ""  # kills: immediate | delayed | never
    restart_after_s: float = 0.0
    duration_s: float = 0.0  # outages
    kill_again_after_s: float | None = None  # an immediate restart killed again during its startup

    def describe(self) -> str:
        if self.kind == "kill":
            again = f"+kill@{self.kill_again_after_s:.1f}s" if self.kill_again_after_s is not None else ""
            restart = f"{self.restart}" + (f"({self.restart_after_s:.0f}s)" if self.restart == "delayed" else "")
            return f"kill[{self.phase}+{self.delay_s:.1f}s,{restart}{again}]"
        if self.kind in ("join", "leave"):
            return f"{self.kind}[{self.phase}+{self.delay_s:.1f}s]"
        return f"{self.kind}[{self.phase}+{self.delay_s:.1f}s,{self.duration_s:.0f}s]"


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    per_partition: int
    oversized: bool  # one 2 MB record among the on-time ones
    initial_workers: int
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    @property
    def kills(self) -> int:
        return sum(1 + (f.kill_again_after_s is not None) for f in self.faults if f.kind == "kill")

    @property
    def pauses(self) -> int:
        return sum(1 for f in self.faults if f.kind == "pause")

    @property
    def topology_changes(self) -> int:
        return sum(1 for f in self.faults if f.kind in ("join", "leave") or (f.kind == "kill" and f.restart == "never"))

    def describe(self) -> str:
        faults = " ".join(f.describe() for f in self.faults)
        return (f"{self.per_partition * 4} events{' + 2MB record' if self.oversized else ''}, "
                f"{self.initial_workers} worker(s), {self.kills} kills: {faults}")


PAUSE_S = (12.0, 20.0)  # past the session timeout (10 s): the group moves the worker's partitions


def make_plan(seed: int, *, pauses: bool = True) -> Plan:
    """`pauses`: whether zombies may be made (only where the broker fences them: transactions)."""
    rng = random.Random(seed)
    topology = rng.choices(("stay", "join", "leave", "join-leave"), weights=(4, 3, 2, 2))[0]
    initial = 2 if topology in ("leave", "join-leave") or rng.random() < 0.3 else 1
    faults: list[Fault] = []
    if "join" in topology:
        faults.append(Fault(rng.choice(PHASES[:2]), rng.uniform(0.5, 8), "join"))
    if "leave" in topology:
        faults.append(Fault(rng.choice(PHASES), rng.uniform(0.5, 8), "leave"))
    workers_after = initial + ("join" in topology) - ("leave" in topology)
    kills = 0
    while kills < MIN_KILLS + rng.randint(0, 2):
        restart = rng.choices(("immediate", "delayed", "never"),
                              weights=(5, 4, 1 if workers_after > 1 else 0))[0]
        if restart == "never":
            workers_after -= 1
        again = rng.uniform(0.5, 4.0) if restart == "immediate" and rng.random() < 0.35 else None
        faults.append(Fault(rng.choices(PHASES, weights=(5, 3, 3))[0], rng.uniform(0, 12), "kill", restart,
                            rng.uniform(2, 15), kill_again_after_s=again))
        kills += 1 + (again is not None)
    if rng.random() < 0.45:
        # A store outage, with a worker killed while it lasts: the rebalance must not wait for the store.
        kind = rng.choice(("s3-freeze", "redis-freeze", "redis-restart"))
        phase, delay, duration = rng.choice(PHASES), rng.uniform(0, 8), rng.uniform(5, 20)
        faults.append(Fault(phase, delay, kind, duration_s=duration))
        faults.append(Fault(phase, delay + duration * rng.uniform(0.2, 0.8), "kill", "immediate"))
    pause = Fault(rng.choice(PHASES[:2]), rng.uniform(0, 10), "pause", duration_s=rng.uniform(*PAUSE_S))
    if pauses and rng.random() < 0.5:
        faults.append(pause)
    faults.sort(key=lambda f: (PHASES.index(f.phase), f.delay_s))
    faults = _keep_one_worker(faults, initial)
    return Plan(seed, rng.choice((800, 1200, 1800)), rng.random() < 0.5, initial, tuple(faults))


def _keep_one_worker(faults: list[Fault], initial: int) -> list[Fault]:
    """In the order they strike, a kill that would leave no worker restarts it after a delay instead."""
    alive, kept = initial, []
    for fault in faults:
        if fault.kind == "join":
            alive += 1
        elif fault.kind == "leave":
            if alive < 2:
                continue  # the harness only stops a worker while another runs
            alive -= 1
        elif fault.kind == "kill" and fault.restart == "never":
            if alive < 2:
                fault = Fault(fault.phase, fault.delay_s, "kill", "delayed", fault.restart_after_s)
            else:
                alive -= 1
        kept.append(fault)
    return kept
