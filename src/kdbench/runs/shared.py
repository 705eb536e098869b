"""Run folders that share their upstream stacks with others (sweep points, explain variants):
a `SharedCache` reads and writes them through the sweep's `shared/` folders, hard-linked, so each
point's own folder stays a complete run.
"""

from __future__ import annotations

from pathlib import Path

from kdbench.config import Config
from kdbench.engine.stack_model import Params
from kdbench.engine.trainer import Snapshot
from kdbench.records import Record
from kdbench.roles import UPSTREAM, StackName
from kdbench.runs.checks import Stamps
from kdbench.runs.store import RunStore, link


def small_networks_key(cfg: Config) -> str:
    """The shared folder name of the small networks of every run that differs from `cfg` at
    most in its teachers (or in what distillation does): `small-` and their stamp, shortened."""
    return "small-" + Stamps.of(cfg).small[:12]


class SharedCache:
    """A run folder whose upstream stacks (teachers; ensemble members and hard-label students)
    come from, and go to, a folder shared by every sweep point that does not change them. The
    small networks also go to a sibling folder (`small_networks_key`) shared by the points that
    differ only in their teachers, so a grid over the teachers trains them once. The point's
    own folder still gets each checkpoint (hard-linked), so it stays a complete run."""

    def __init__(self, store: RunStore, shared: Path):
        self.store, self.shared = store, Path(shared)
        self.small = self.shared.parent / small_networks_key(store.config)
        self.trained: list[str] = []  # stacks this point trained itself (not loaded)

    def _homes(self, name: StackName) -> list[Path]:
        """The shared folders stack `name` is kept in, the first the one it is read from first."""
        if name == StackName.SMALL_NETWORKS:
            return [self.shared, self.small]
        return [self.shared] if name in UPSTREAM else []

    def load_stack(self, name: StackName):
        """The point's own stack, or a shared one that holds more models (another point grew
        it by more repeats, or the point has none yet), linked into the point's folder first."""
        held = RunStore.stack_size(self.store.folder, name)
        for home in self._homes(name):
            if RunStore.stack_size(home, name) > held:
                link(RunStore.checkpoint_path(home, name),
                     RunStore.checkpoint_path(self.store.folder, name))  # fmt: skip
                break
        return self.store.load_stack(name)

    def load_snapshot(self, name: StackName) -> Snapshot | None:
        return self.store.load_snapshot(name)  # a snapshot stays with the point that made it

    def save_snapshot(self, name: StackName, snap: Snapshot) -> None:
        self.store.save_snapshot(name, snap)

    def save_stack(self, name: StackName, params: Params, records: list[Record]) -> None:
        self.trained.append(str(name))
        self.store.save_stack(name, params, records)
        for home in self._homes(name):
            link(
                RunStore.checkpoint_path(self.store.folder, name),
                RunStore.checkpoint_path(home, name),
            )
