"""Resource counts by hand, ONNX against eager PyTorch, int8 export, latency measurement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdbench.engine.mlp import MLP, init_stack
from kdbench.runs import export, latency
from kdbench.runs.resources import counts
from tests.in_process import kdbench


def _counts(sizes, members=1):
    return counts(MLP(sizes).size(), members)


def test_counts_for_the_papers_architectures():
    teacher = _counts([784, 500, 400, 300, 200, 100, 10])
    # 784*500 + 500*400 + 400*300 + 300*200 + 200*100 + 100*10 = 793,000 weights
    assert teacher["macs"] == 793_000
    assert teacher["params"] == 793_000 + (500 + 400 + 300 + 200 + 100 + 10)
    assert teacher["bytes_float32"] == 4 * 794_510
    student = _counts([784, 100, 10])
    assert (student["macs"], student["params"]) == (79_400, 79_510)
    ensemble = _counts([784, 100, 10], members=10)
    assert (ensemble["macs"], ensemble["params"]) == (794_000, 795_100)
    assert student["bytes_int8"] == 79_400 + 4 * 110 + 5 * 2


def test_counts_of_any_family_agree_with_the_fully_connected_formula():
    """`StackModel.size` counted on the member module (conv nets, your own modules, BatchNorm)
    on an MLP built as a module gives the hand-derived counts; on LeNet-5, its classic figures;
    BatchNorm's scale and shift count as float32 parameters, its running statistics not."""
    from torch import nn

    from kdbench.engine.architectures import lenet5
    from kdbench.engine.modules import ModuleStack

    def as_module():
        return nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))

    model = ModuleStack(as_module, (784,), 10)
    assert counts(model.size(), 3) == _counts([784, 100, 10], members=3)
    conv = ModuleStack(lambda: lenet5((1, 28, 28), 10), (1, 28, 28), 10)
    got = counts(conv.size())
    assert got["params"] == 61_706
    # conv1 28x28x6 x 25, conv2 10x10x16 x 150, dense 400x120 + 120x84 + 84x10
    assert got["macs"] == 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert got["bytes_int8"] == 61_706 - 236 + 4 * 236 + 5 * 5  # 236 biases, 5 weight tensors

    def with_bn():
        return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(),
                             nn.Linear(4 * 26 * 26, 10))  # fmt: skip

    bn = counts(ModuleStack(with_bn, (1, 28, 28), 10).size())
    assert bn["params"] == 36 + 8 + 2704 * 10 + 10  # conv, BN scale and shift, dense
    assert bn["bytes_int8"] == 36 + 27_040 + 4 * (8 + 10) + 5 * 2


@pytest.mark.parametrize("k", [1, 3], ids=["one", "ensemble"])
def test_a_conv_net_in_onnx_equals_pytorch_and_is_timed(k, tmp_path):
    from kdbench.engine.architectures import build

    family = build("cnn:4,8", 784, 10, (1, 28, 28))
    stacked = family.init(list(range(k)))
    members = [[p[m] for p in stacked] for m in range(k)]
    x = torch.rand(64, 784)
    path = export.write_onnx(members, tmp_path / "m.onnx", family)
    got = export.run(export.session(path), x.view(64, 1, 28, 28).numpy())  # images [N, C, H, W]
    want = export.reference_outputs(members, x, family)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    if k == 1:  # the eager forward is the module's own, and the timer runs both engines
        with torch.no_grad():
            ref = family.member(stacked, 0)(x.view(64, 1, 28, 28))
            torch.testing.assert_close(torch.as_tensor(want), ref)
        measured = latency.measure(members, x, family)
        assert measured["torch_b1"]["median_us"] > 0 and measured["onnx_b256"]["median_us"] > 0


def _members(sizes, k):
    stack = init_stack(sizes, range(k))
    return [[p[i] for p in stack] for i in range(k)]


@pytest.mark.parametrize(
    "sizes, k", [([784, 500, 400, 300, 200, 100, 10], 1), ([784, 100, 10], 1), ([784, 100, 10], 4)]
)
def test_onnx_equals_pytorch_on_random_inputs(sizes, k, tmp_path):
    members, model = _members(sizes, k), MLP(sizes)
    x = torch.rand(64, 784)
    path = export.write_onnx(members, tmp_path / "m.onnx", model)
    got = export.run(export.session(path), x.numpy())
    want = export.reference_outputs(members, x, model)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("role", ["student_from_ensemble", "ensemble", "teacher"])
def test_export_cli_on_real_models_matches_pytorch_and_reports_int8(quick_copy, role):
    proc = kdbench("export", quick_copy, "--role", role, "--int8")
    assert proc.returncode == 0, proc.stderr
    folder = quick_copy / "exports" / f"{role}-r0"
    info = json.loads((folder / f"{role}-r0.json").read_text())
    assert info["max_abs_diff_vs_torch"] < 1e-4
    # metadata a deployment needs, in the file itself, and a model card beside it
    import onnx

    props = {p.key: p.value for p in onnx.load(str(folder / f"{role}-r0.onnx")).metadata_props}
    assert props["role"] == role and props["classes"] == "10"
    assert props["test_error_pct"] == f"{100 * info['test_error_onnx']:.2f}"
    assert "divided by 255" in props["preprocessing"] and len(props["config_sha256"]) == 64
    summary = json.loads((quick_copy / "summary.json").read_text())
    lo, hi = summary["rows"][role]["ci95_pct"]
    assert props["row_ci95_pct"] == f"{lo:.2f}–{hi:.2f}%"
    card = (folder / "MODEL_CARD.md").read_text()
    assert props["test_error_pct"] in card and "µs per image" in card and "parameters" in card
    assert info["test_error_onnx"] == info["test_error_torch"]
    assert 0 < info["test_error_int8"] < 0.5
    assert info["bytes_int8"] < info["bytes"] / 3
    int8 = next(line for line in card.splitlines() if line.startswith("- **int8**"))
    assert f"test error {100 * info['test_error_int8']:.2f}%" in int8
    assert f"{info['bytes_int8']:,} bytes" in int8 and "MatMulInteger" in int8
    assert f"test_error_int8: {100 * info['test_error_int8']:.2f}%" in proc.stdout  # percent


def test_resources_in_summary_and_report(quick_run):
    summary = json.loads((quick_run / "summary.json").read_text())
    res = summary["resources"]["rows"]
    members = json.loads((quick_run / "config.json").read_text())["config"]["protocol"]["members"]
    assert res["ensemble"]["params"] == members * res["student_hard"]["params"]
    for row in res.values():
        for key in ("torch_b1", "onnx_b1", "torch_b256", "onnx_b256"):
            assert row["latency"][key]["median_us"] > 0
    assert (quick_run / "tradeoff.png").stat().st_size > 0
    assert "What each model costs" in (quick_run / "report.md").read_text()


def test_latency_block_timing_is_positive_and_ordered():
    import time

    t = latency.time_per_image(lambda: sum(range(1000)), batch=1, min_run_time=0.05)
    assert 0 < t["q1_us"] <= t["median_us"] <= t["q3_us"]
    # the same work measured twice gives the same figure within noise; work of a fixed
    # duration (a sleep) keeps this true on a shared, busy machine
    a = latency.time_per_image(lambda: time.sleep(0.002), batch=1, min_run_time=0.1)
    b = latency.time_per_image(lambda: time.sleep(0.002), batch=1, min_run_time=0.1)
    assert 2000 <= a["median_us"] < 4000 and 0.67 < b["median_us"] / a["median_us"] < 1.5
    per_image = latency.time_per_image(lambda: time.sleep(0.002), batch=10, min_run_time=0.1)
    assert 0.067 < per_image["median_us"] / a["median_us"] < 0.15  # a tenth: per image


def test_load_gives_the_trained_model_back(quick_run):
    """kdbench.load: an eval-mode nn.Module whose test error is the recorded one, preprocessing
    documented on it; a checkpoint that does not match the run's configuration is refused."""
    import json

    import kdbench
    from kdbench.data import datasets as data

    arrays = data.load("mnist", train_limit=2000)
    from kdbench.runs.loading import Ensemble

    for role, expected_type in (("student_from_ensemble", torch.nn.Sequential),
                                ("ensemble", Ensemble)):  # fmt: skip
        model = kdbench.load(quick_run, role, repeat=1)
        assert isinstance(model, expected_type) and not model.training
        assert "divided by 255" in model.preprocessing
        with torch.no_grad():
            err = float((model(arrays.x_test).argmax(1) != arrays.y_test).float().mean())
        records = [json.loads(x) for x in (quick_run / "records.jsonl").read_text().splitlines()]
        kind = "ensemble" if role == "ensemble" else "model"
        mine = [r for r in records if r["role"] == role and r["repeat"] == 1 and r["kind"] == kind]
        recorded = mine[0]["test_error"]
        assert err == pytest.approx(recorded, abs=1e-6)
    member = kdbench.load(quick_run, "ensemble", repeat=0, member=2)
    assert isinstance(member, torch.nn.Sequential)
    # a loaded ensemble returns logits, as students do: softmax of its output is the mean of
    # its members' probabilities (it returned those probabilities themselves)
    whole = kdbench.load(quick_run, "ensemble", repeat=0)
    parts = [kdbench.load(quick_run, "ensemble", repeat=0, member=k) for k in range(3)]
    with torch.no_grad():
        x = arrays.x_test[:50]
        mean = torch.stack([m(x).softmax(-1) for m in parts]).mean(0)
        assert torch.allclose(whole(x).softmax(-1), mean, atol=1e-6)
        assert torch.allclose(whole(x).exp(), mean, atol=1e-6)  # log-probabilities
    with pytest.raises(kdbench.ConfigError, match=r"members 0\.\.2"):
        kdbench.load(quick_run, "ensemble", repeat=0, member=3)


def test_load_refuses_a_checkpoint_from_another_configuration(quick_run, tmp_path):
    import json
    import shutil

    import kdbench
    from kdbench.errors import RunFolderError

    other = tmp_path / "other"
    shutil.copytree(quick_run, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["model"]["student_hidden"] = [50]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunFolderError, match="does not belong to this run"):
        kdbench.load(other, "student_hard")
