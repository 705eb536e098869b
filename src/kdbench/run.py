"""One study from configuration to report: load data, train, record, render.

The entry point the CLI and the Python API share: `reproduce(Config(), "runs/x")`.
"""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy
import torch

import kdbench
from kdbench import data, latency, report
from kdbench.config import Config
from kdbench.engine import Progress
from kdbench.errors import ConfigError
from kdbench.protocol import run_study
from kdbench.store import RunStore, write_json


def default_out() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def environment(cfg: Config) -> dict[str, str]:
    env = {
        "kdbench": kdbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "torch threads": str(torch.get_num_threads()),
        "device": cfg.device,
    }
    if cfg.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _prepare_device(cfg: Config) -> None:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu"
        )
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)


def reproduce(
    cfg: Config,
    out: str | Path | None = None,
    progress: Progress | None = None,
    measure_latency: bool = True,
) -> tuple[Path, dict]:
    """Run the paper's study with `cfg`; returns (run folder, summary)."""
    start = time.perf_counter()
    _prepare_device(cfg)
    d = cfg.data
    splits = data.load(d.dataset, d.data_dir, d.validation_split, d.train_limit)
    if cfg.train.batch_size > len(splits.x_train):
        raise ConfigError(
            f"batch size {cfg.train.batch_size} exceeds the {len(splits.x_train)} training images;"
            " lower --batch-size or raise --train-limit"
        )
    folder = Path(out) if out is not None else default_out()
    run_config = {
        "config": cfg.to_dict(),
        "environment": environment(cfg),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seeds": "derived by numpy SeedSequence([seed, repeat, role(1 teacher, 2 ensemble,"
        " 3 student), member]); see records.jsonl for each model's seeds",
    }
    store = RunStore(folder, run_config)
    splits = splits.to(cfg.device)
    records = run_study(cfg, splits, store.append_record, progress, store)
    measured = None
    if measure_latency:
        measured = latency.measure_rows(folder, cfg.to_dict(), splits.x_test[:256].cpu())
        write_json(folder / "resources.json", measured)
    timing = {"total_seconds": time.perf_counter() - start, "resumed": store.resumed}
    summary = report.render(folder, records, run_config, timing, measured)
    return folder, summary
