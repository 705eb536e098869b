"""Executors: where a sweep's (or an explanation's) work runs.

An executor is given the plan's work in two kinds of item and returns, in the same order:

- `DistilWork` (one distilled stack of one or more points): the names of the stacks each of
  its points trained (so a report can say what was reused);
- `Point` (one run folder whose stacks are all trained): its summary, from `reproduce`.

The ordering rule: the first `DistilWork` of each shared folder trains that folder's teachers
and small networks, so it must finish before any other work of the same folder starts; every
`Point` comes after all `DistilWork`. Within those rules an executor may run items in parallel.
`local` runs them one by one in this process; `ray` runs them as Ray tasks (a cluster).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from kdbench.errors import ConfigError
from kdbench.protocol.run import distil_points, reproduce
from kdbench.sweeps.plan import DistilWork, Point


def train_stack(work: DistilWork, progress=None) -> list[list[str]]:
    """One distilled stack (and the shared teachers if missing)."""
    cfgs = [p.config for p in work.points]
    return distil_points(cfgs, [p.folder for p in work.points], work.shared, progress)


def report_point(point: Point, progress=None) -> dict:
    """One point's run folder, its stacks already trained: load, diagnose, report."""
    _, summary = reproduce(point.config, point.folder, progress, False, shared=point.shared)
    return summary


class Executor(Protocol):
    def run(
        self, stacks: list[DistilWork], points: list[Point]
    ) -> tuple[list[list[list[str]]], list[dict]]: ...


class LocalExecutor:
    """Everything in this process, in plan order (which satisfies the ordering rule)."""

    def __init__(self, progress=None):
        self.progress = progress

    def run(self, stacks, points):
        trained = []
        for i, work in enumerate(stacks, 1):
            self._say(f"stack {i}/{len(stacks)}: the distilled students of "
                      + ", ".join(p.label for p in work.points))  # fmt: skip
            trained.append(train_stack(work, self.progress))
        summaries = []
        for i, point in enumerate(points, 1):
            self._say(f"point {i}/{len(points)} {point.label}: its report")
            summaries.append(report_point(point, self.progress))
        return trained, summaries

    def _say(self, text: str) -> None:
        """Which point or variant the lines that follow are about."""
        if self.progress is not None:
            self.progress.phase(text)


class RayExecutor:
    """Stacks as Ray tasks, in two waves: the first stack of each shared folder (it trains the
    teachers and small networks), then every other stack in parallel (they only distil); then
    each point's report as a task of its own."""

    def __init__(self, address: str | None = None):
        try:
            import ray  # optional dependency: kdbench[ray]
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'kdbench[ray]'") from None
        self.ray, self.address = ray, address

    def run(self, stacks, points):
        ray = self.ray
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False)
        # each task one thread per core Ray gives it (workers share the machine: the free-core
        # rule of `protocol.threads` would count the other workers as someone else's load)
        stacks = [DistilWork(tuple(_threads(p) for p in w.points)) for w in stacks]
        points = [_threads(p) for p in points]
        stack_task = ray.remote(num_cpus=CPUS_PER_TASK)(train_stack)
        point_task = ray.remote(num_cpus=CPUS_PER_TASK)(report_point)
        first: dict = {}
        for n, work in enumerate(stacks):
            first.setdefault(work.shared, n)
        trained: dict[int, list] = {}
        for wave in (
            sorted(first.values()),
            [n for n in range(len(stacks)) if n not in first.values()],
        ):
            refs = {n: stack_task.remote(stacks[n]) for n in wave}
            trained.update({n: ray.get(ref) for n, ref in refs.items()})
        summaries = ray.get([point_task.remote(p) for p in points])
        return [trained[n] for n in range(len(stacks))], summaries


CPUS_PER_TASK = 1


def _threads(point: Point) -> Point:
    """The point with a thread count of the cores its Ray task holds."""
    return dataclasses.replace(point, config=point.config.with_overrides(threads=CPUS_PER_TASK))


EXECUTORS = ("local", "ray")


def get_executor(name: str, address: str | None = None, progress=None) -> Executor:
    if name == "local":
        return LocalExecutor(progress)
    if name == "ray":
        return RayExecutor(address)
    raise ConfigError(f"unknown executor '{name}'; use {' or '.join(EXECUTORS)}")
