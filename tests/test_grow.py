"""Growing a finished run: `--repeats 3` on a folder of 2 finished repeats trains repeat 2 only
(every stack, controls included) and ends as a 3-repeat run made from scratch; fewer repeats
than the folder holds is refused; stamps made when the repeat count was hashed still count."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from kdbench.config import Config, flat
from kdbench.engine import trainer
from kdbench.errors import RunFolderError
from kdbench.protocol.run import reproduce
from kdbench.records import MEASURED
from kdbench.roles import StackName
from kdbench.runs.checks import Stamps
from kdbench.runs.store import RunStore, read_config

STACKS = [
    StackName.TEACHERS,
    StackName.SMALL_NETWORKS,
    StackName.DISTILLED,
    StackName.CONTROLS,
    StackName.SELF_DISTILLED,
    StackName.REGULARISED,
]


def _cfg(repeats: int) -> Config:
    return Config().with_overrides(
        train_limit=600, repeats=repeats, members=2, teacher_hidden=(32,), student_hidden=(8,),
        teacher_dropout=0.2, controls="smoothing,smoothing-matched,self,teacher-reg",
        max_epochs=4, threads=1,
    )  # fmt: skip


def _numbers(folder):
    lines = (folder / "records.jsonl").read_text().splitlines()
    recs = [{k: v for k, v in json.loads(x).items() if k not in MEASURED} for x in lines]
    return sorted(recs, key=lambda r: (r["kind"], r["role"], r["repeat"], str(r["member"])))


def test_a_finished_run_grows_by_its_missing_repeats_and_equals_one_made_from_scratch(
    tmp_path, monkeypatch
):
    reproduce(_cfg(3), tmp_path / "scratch", progress=False, measure_latency=False)
    reproduce(_cfg(2), tmp_path / "grown", progress=False, measure_latency=False)

    sizes = []
    train = trainer.train

    def spy(stack, *args, **kwargs):
        sizes.append((stack.name, stack.size))
        return train(stack, *args, **kwargs)

    monkeypatch.setattr(trainer, "train", spy)
    _, summary = reproduce(_cfg(3), tmp_path / "grown", progress=False, measure_latency=False)
    # one repeat's models only: 1 teacher, 2 members + 1 hard student, 2 distilled, 2 smoothed,
    # 1 self-distilled, 1 regularised
    assert sorted(sizes) == sorted([
        (StackName.TEACHERS, 1), (StackName.SMALL_NETWORKS, 3), (StackName.DISTILLED, 2),
        (StackName.CONTROLS, 2), (StackName.SELF_DISTILLED, 1), (StackName.REGULARISED, 1),
    ])  # fmt: skip
    assert summary.completed_repeats == summary.min_repeats == 3

    scratch, grown = _numbers(tmp_path / "scratch"), _numbers(tmp_path / "grown")
    assert [(r["role"], r["repeat"], r.get("epochs")) for r in grown] == [
        (r["role"], r["repeat"], r.get("epochs")) for r in scratch
    ]
    for a, b in zip(grown, scratch, strict=True):  # a member's floats do not depend on its stack
        assert a["test_error"] == pytest.approx(b["test_error"], abs=2e-3), (a["role"], a["repeat"])
    for name in STACKS:  # one checkpoint per stack, members in a from-scratch run's order
        g = RunStore.read_stack(tmp_path / "grown", name)
        s = RunStore.read_stack(tmp_path / "scratch", name)
        assert [(r.role, r.repeat, r.member) for r in g[1]] == [
            (r.role, r.repeat, r.member) for r in s[1]
        ]
        for a, b in zip(g[0], s[0], strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    noted = json.loads((tmp_path / "grown" / "config.json").read_text())
    assert noted["grown"][0]["from_repeats"] == 2 and noted["grown"][0]["to_repeats"] == 3
    assert read_config(tmp_path / "grown").protocol.repeats == 3


def test_fewer_repeats_than_the_folder_holds_is_refused_naming_the_fix(tmp_path):
    RunStore(tmp_path / "run", {"config": _cfg(3).to_dict()})
    before = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(RunFolderError, match=r"holds 3 repeats.*--repeats 3.*kdbench report"):
        RunStore(tmp_path / "run", {"config": _cfg(2).to_dict()})
    assert (tmp_path / "run" / "config.json").read_bytes() == before


def _hashed_with_repeats(cfg: Config) -> str:
    """The full stamp as kdbench made it before the repeat count left the hash, written out:
    every setting off its default but the preset and threads, the repeat count included."""
    default = flat(Config().to_dict())
    raw = {
        k: v
        for k, v in flat(cfg.to_dict()).items()
        if k not in ("preset", "threads") and v != default.get(k)
    }
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


def test_stamps_from_when_the_repeat_count_was_hashed_still_count():
    three, ten = _cfg(3), _cfg(3).with_overrides(repeats=10)
    old = _hashed_with_repeats(three)
    assert old != Stamps.of(three).full  # the count is no longer in the hash...
    assert Stamps.of(ten).full == Stamps.of(three).full == _hashed_with_repeats(ten)
    # ...and a model stamped under it still belongs to this run (grown to 10 or not)
    assert Stamps.of(ten).accepts(old, StackName.DISTILLED)
    other = _hashed_with_repeats(three.with_overrides(alpha=0.5))
    assert not Stamps.of(ten).accepts(other, StackName.DISTILLED)


def test_grow_with_only_repeats_and_the_folder_as_the_base(tmp_path):
    """`kdbench reproduce --repeats N --out RUN`: the folder's own settings are the base (no
    flag retyped); a changed setting is refused, naming only it (never the repeat count)."""
    from tests.in_process import kdbench

    out = tmp_path / "run"
    first = ["--dataset", "digits", "--members", "2", "--epochs", "1", "--teacher-hidden", "32",
             "--student-hidden", "8", "--threads", "1", "--quiet", "--no-latency"]  # fmt: skip
    assert kdbench("reproduce", *first, "--repeats", "2", "--out", out).returncode == 0
    proc = kdbench("reproduce", "--repeats", "3", "--quiet", "--no-latency", "--out", out)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert {r["repeat"] for r in recs} == {0, 1, 2}
    assert json.loads((out / "config.json").read_text())["config"]["data"]["dataset"] == "digits"
    proc = kdbench("reproduce", "--repeats", "4", "--alpha", "0.5", "--quiet", "--out", out)
    assert proc.returncode == 2 and "(distill.alpha)" in proc.stderr, proc.stderr
    assert "repeats" not in proc.stderr.split("configuration")[1]
