"""The Ray executor gives the local executor's numbers, for MLP grid points, for conv nets
built in Ray's worker processes, and for the deploy preset's nets and recipe. Its own file, so
the suite's workers share the sweep tests."""

from __future__ import annotations

import pytest

from kdbench.protocol.presets import resolve
from kdbench.sweeps import sweep
from tests.sweep_numbers import sweep_numbers


def test_ray_executor_gives_the_localsweep_numbers(tmp_path, local_sweep):
    ray = pytest.importorskip("ray")
    # conftest.SWEEP_ARGS as settings: the grid and base the reference sweep was made with
    base = resolve("paper", train_limit=1000, repeats=2, members=2, epochs=1, threads=1)
    grid = sweep.parse_grid(["temperature=2,8", "alpha=0.1,0.9"])
    # and a sweep over the architecture: conv nets built in Ray's worker processes
    digits = resolve("paper", dataset="digits", teacher_hidden=(16,), repeats=2, members=2,
                     epochs=1, threads=1)  # fmt: skip
    archs = sweep.parse_grid(["student_arch=mlp:8,cnn:4"])
    sweep.run(digits, archs, tmp_path / "archs-local")
    # and the deploy preset (BN ResNet teacher, MobileNetV2-style students, SGD + cosine, crops
    # and flips drawn in the workers, controls), over the augmentation
    deploy = resolve("deploy", dataset="digits", repeats=2, members=2, epochs=1, threads=1)
    recipe = sweep.parse_grid(["augment=crop,crop+flip"])
    sweep.run(deploy, recipe, tmp_path / "deploy-local")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sweep.run(base, grid, tmp_path / "ray", executor="ray")
        sweep.run(digits, archs, tmp_path / "archs-ray", executor="ray")
        sweep.run(deploy, recipe, tmp_path / "deploy-ray", executor="ray")
    finally:
        ray.shutdown()
    assert sweep_numbers(tmp_path / "ray") == sweep_numbers(local_sweep)
    assert sweep_numbers(tmp_path / "archs-ray") == sweep_numbers(tmp_path / "archs-local")
    assert sweep_numbers(tmp_path / "deploy-ray") == sweep_numbers(tmp_path / "deploy-local")
