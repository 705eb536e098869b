"""A grown run against one made from scratch: 3 finished repeats grown to 5, against 5 repeats
trained at once (the controls included, so every kind of stack grows).

    python benchmarks/grow.py --out /tmp/grow

Prints whether the records have the same models, seeds and epochs, the largest test-error
difference, whether the summaries' rows and comparisons are equal, and per stack whether its
members are in the same order and the largest weight difference (a member's floats depend on its
stack only within float tolerance).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from kdbench.config import Config
from kdbench.protocol.run import reproduce
from kdbench.records import MEASURED
from kdbench.roles import StackName
from kdbench.runs.store import RunStore


def config(repeats: int) -> Config:
    return Config().with_overrides(
        train_limit=600, repeats=repeats, members=2, teacher_hidden=(32,), student_hidden=(8,),
        teacher_dropout=0.2, controls="smoothing,smoothing-matched,self,teacher-reg",
        max_epochs=4, threads=1,
    )  # fmt: skip


def numbers(folder: Path) -> list[dict]:
    lines = (folder / "records.jsonl").read_text().splitlines()
    recs = [{k: v for k, v in json.loads(x).items() if k not in MEASURED} for x in lines]
    return sorted(recs, key=lambda r: (r["kind"], r["role"], r["repeat"], str(r["member"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/kdbench-grow"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    scratch, grown = args.out / "scratch", args.out / "grown"
    reproduce(config(5), scratch, progress=False, measure_latency=False)
    reproduce(config(3), grown, progress=False, measure_latency=False)
    reproduce(config(5), grown, progress=False, measure_latency=False)
    a, b = numbers(grown), numbers(scratch)
    keys = [(r["role"], r["repeat"], r["member"], r.get("seed"), r.get("epochs")) for r in a]
    print(f"records: {len(a)} grown, {len(b)} from scratch; same models, seeds and epochs:",
          keys == [(r["role"], r["repeat"], r["member"], r.get("seed"), r.get("epochs"))
                   for r in b])  # fmt: skip
    diff = max(abs(x["test_error"] - y["test_error"]) for x, y in zip(a, b, strict=True))
    print(f"largest test-error difference: {diff:.2e}")
    sa, sb = (json.loads((f / "summary.json").read_text()) for f in (grown, scratch))
    print("summary rows equal:", sa["rows"] == sb["rows"],
          "· comparisons equal:", sa["comparisons"] == sb["comparisons"])  # fmt: skip
    for name in StackName:
        g, s = RunStore.read_stack(grown, name), RunStore.read_stack(scratch, name)
        if g is None or s is None:
            continue
        order = [(r.role, r.repeat, r.member) for r in g[1]] == [
            (r.role, r.repeat, r.member) for r in s[1]
        ]
        worst = max(float((x - y).abs().max()) for x, y in zip(g[0], s[0], strict=True))
        print(f"{name}: same order {order}, largest weight difference {worst:.1e}")


if __name__ == "__main__":
    main()
