"""Built-in architectures by name: each parses, is Keras-initialised, trains as a stack, and a
bad name is one line that says the fix."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from kdbench.config import TrainConfig
from kdbench.data.datasets import IMAGES
from kdbench.engine import native
from kdbench.engine import trainer as engine
from kdbench.engine.architectures import build
from kdbench.engine.mlp import MLP
from kdbench.engine.modules import ModuleStack
from kdbench.errors import ConfigError

MNIST = IMAGES["mnist"]


def test_mlp_by_name_is_the_fast_path():
    assert build("mlp:100,50", 784, 10, MNIST) == MLP([784, 100, 50, 10])


def test_lenet5_has_its_classic_size_and_keras_init():
    model = build("lenet5", 784, 10, MNIST)
    assert isinstance(model, ModuleStack)
    assert model.parameters_per_member() == 156 + 2416 + 48120 + 10164 + 850  # 61,706
    net = model.member(model.init([7]), 0)
    for layer in net.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight[0].numel()
            fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel()
            if isinstance(layer, nn.Linear):
                fan_out = layer.weight.shape[0]
            limit = math.sqrt(6 / (fan_in + fan_out))
            w = layer.weight.detach()
            assert float(w.abs().max()) <= limit and not layer.bias.any()
            if w.numel() > 10_000:  # uniform on [-limit, limit]: its std is limit / sqrt(3)
                assert float(w.std()) == pytest.approx(limit / math.sqrt(3), rel=0.05)


def test_a_small_cnn_stack_learns(small_splits):
    model = build("cnn:4,8", small_splits.n_features, small_splits.n_classes, MNIST)
    cfg = dataclasses.replace(TrainConfig(), epochs=3, learning_rate=3e-3)
    result = engine.train(engine.Stack("cnn", model, [1, 2], [3, 4]), small_splits, cfg)
    errors = model.logits(result.params, small_splits.x_test).argmax(-1) != small_splits.y_test
    assert float(errors.float().mean()) < 0.5  # chance is 0.9; 480 training images, 3 epochs


@pytest.mark.parametrize(
    ("spec", "image", "says"),
    [
        ("cnn:", MNIST, "whole numbers >= 1"),
        ("cnn:0", MNIST, "whole numbers >= 1"),
        ("mlp:a", MNIST, "whole numbers >= 1"),
        ("lenet", MNIST, "did you mean lenet5"),
        ("lenet5:3", MNIST, "takes no sizes"),
        ("cnn:4,8", None, "no image shape"),
        ("cnn:4,8,16", IMAGES["digits"], "shrinks 8x8 images to nothing"),
        ("lenet5", IMAGES["digits"], "at least 12x12"),
    ],
)
def test_bad_architectures_are_one_line(spec, image, says):
    n = image[1] * image[2] if image else 784
    with pytest.raises(ConfigError) as exc:
        build(spec, n, 10, image)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_a_member_of_a_conv_stack_is_an_ordinary_module(small_splits):
    model = build("cnn:4", 784, 10, MNIST)
    params = model.init([5, 6])
    net = model.member(params, 1)
    with torch.no_grad():
        torch.testing.assert_close(
            net(small_splits.x_test.view(-1, *MNIST)), model.logits(params, small_splits.x_test)[1]
        )


CONV = ["--dataset", "digits", "--teacher-arch", "cnn:8", "--student-arch", "cnn:4", "--repeats",
        "2", "--members", "2", "--epochs", "2", "--threads", "1", "--quiet"]  # fmt: skip


def test_a_conv_study_end_to_end(tmp_path):
    """`reproduce --teacher-arch/--student-arch`: trains, resumes without retraining, re-renders,
    diagnoses, hands each model back as a module whose test error is the recorded one, and
    exports it to ONNX (float32 and int8) checked against eager PyTorch; a conv teacher also
    trains along with its students and with dropout; bad settings are one line."""
    from kdbench.data import datasets
    from kdbench.protocol.arrays import splits_of
    from kdbench.runs.loading import load
    from kdbench.runs.store import read_config
    from tests.in_process import kdbench

    run = tmp_path / "conv"
    assert kdbench("reproduce", *CONV, "--no-latency", "--out", run).returncode == 0
    records = (run / "records.jsonl").read_text()
    weights = (run / "checkpoints" / "small_networks.safetensors").read_bytes()
    assert kdbench("reproduce", *CONV, "--no-latency", "--out", run).returncode == 0  # resume
    assert (run / "records.jsonl").read_text() == records
    assert (run / "checkpoints" / "small_networks.safetensors").read_bytes() == weights
    assert kdbench("report", run).returncode == 0 and kdbench("diagnose", run).returncode == 0
    assert "| Student / ensemble member | cnn:4 |" in (run / "report.md").read_text()
    environment = json.loads((run / "config.json").read_text())["environment"]
    assert environment["conv kernels"] == native.state()  # which conv path trained it
    splits = splits_of(read_config(run), run)
    assert datasets.IMAGES["digits"] == (1, 8, 8)
    for line in records.splitlines():
        rec = json.loads(line)
        if rec["kind"] == "model" and rec["role"] != "ensemble":
            net = load(run, rec["role"], repeat=rec["repeat"])
            with torch.no_grad():
                x = splits.x_test.view(-1, *net.input_shape)  # images [N, C, H, W]
                error = float((net(x).argmax(1) != splits.y_test).float().mean())
            assert error == pytest.approx(rec["test_error"], abs=1e-6), rec["role"]
    with pytest.raises(ConfigError, match="leave out module="):
        load(run, "student_hard", module=torch.nn.Identity)  # a built-in: rebuilt by name
    for role in ("teacher", "ensemble"):
        proc = kdbench("export", run, "--role", role, "--int8")
        assert proc.returncode == 0, proc.stderr
        info = json.loads((run / "exports" / f"{role}-r0" / f"{role}-r0.json").read_text())
        assert info["max_abs_diff_vs_torch"] < 1e-4
        assert info["test_error_onnx"] == info["test_error_torch"]
        assert info["int8_ops"] == ["ConvInteger", "MatMulInteger"]
        assert abs(info["test_error_int8"] - info["test_error_torch"]) < 0.05
    for args, says in (
        (["reproduce", *CONV, "--no-latency", "--student-arch", "lenet5", "--out", tmp_path / "z"],
         "at least 12x12"),
    ):  # fmt: skip
        proc = kdbench(*args)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "z").exists()
    # teachers trained along (each student's own copies of the conv teacher and ensemble), and
    # a conv teacher with dropout
    joint = tmp_path / "joint"
    proc = kdbench("reproduce", *CONV, "--no-latency", "--teacher-updates", "joint",
                   "--teacher-dropout", "0.3", "--out", joint)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (joint / "records.jsonl").read_text().splitlines()]
    teachers = [r["test_error"] for r in rows if r["role"] == "teacher"]
    assert teachers != [r["test_error"] for r in map(json.loads, records.splitlines())
                        if r["role"] == "teacher"]  # fmt: skip


def test_a_damaged_conv_checkpoint_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tests.in_process import kdbench

    run = tmp_path / "conv"
    assert kdbench("reproduce", *CONV, "--no-latency", "--out", run).returncode == 0
    path = run / "checkpoints" / "teachers.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first][..., :1].contiguous()  # a wrong shape
    save_file(tensors, str(path), metadata=meta)
    proc = kdbench("reproduce", *CONV, "--no-latency", "--out", run)
    assert proc.returncode == 2 and "does not belong to this run" in proc.stderr, proc.stderr


def test_a_sweep_over_the_student_architecture(tmp_path):
    """`--grid student_arch=mlp:8,cnn:4,8`: an architecture keeps its own commas; each point
    trains its own ensemble and students (their upstream differs), and the sweep compares them."""
    from kdbench.sweeps.plan import parse_grid
    from tests.in_process import kdbench

    assert parse_grid(["student_arch=mlp:8,cnn:4,8"]) == {"student_arch": ["mlp:8", "cnn:4,8"]}
    out = tmp_path / "sw"
    args = ["sweep", "--dataset", "digits", "--teacher-hidden", "16", "--repeats", "2",
            "--members", "2", "--epochs", "1", "--threads", "1", "--quiet"]  # fmt: skip
    proc = kdbench(*args, "--grid", "student_arch=mlp:8,cnn:4", "--out", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "sweep.json").read_text())
    assert [p["point"]["student_arch"] for p in result["points"]] == ["mlp:8", "cnn:4"]
    upstream = [f for f in (out / "shared").iterdir() if not f.name.startswith("small-")]
    assert len(upstream) == 2  # no upstream shared across architectures
    proc = kdbench(*args, "--grid", "student_arch=mlp:8,cnn:4,8,16", "--out", tmp_path / "bad")
    assert proc.returncode == 2 and "shrinks 8x8 images" in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_your_own_architecture_from_an_import_string(tmp_path, monkeypatch):
    """`--student-arch package.module:Factory`: trained as a stack, resumed, diagnosed and loaded
    back through the same import; an import that fails, or returns no usable module, is one line."""
    from kdbench.runs.loading import load
    from tests.in_process import kdbench

    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.Tanh(),\n"
        "                                 nn.Linear(12, 10))\n"
        "    def forward(self, x):\n"
        "        return self.net(x)\n"
        "def bad():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "mine"
    args = ["reproduce", *CONV[:2], "--student-arch", "mynets:Tiny", "--teacher-hidden", "16",
            *CONV[6:], "--no-latency", "--out", run]  # fmt: skip
    assert kdbench(*args).returncode == 0
    assert kdbench(*args).returncode == 0  # resume: the checkpoints read back through the import
    assert kdbench("diagnose", run).returncode == 0
    net = load(run, "student_hard", repeat=1)
    assert type(net).__name__ == "Tiny"
    for spec, says in (("nowhere.nets:Tiny", "cannot import nowhere.nets"),
                       ("mynets:Missing", "has no callable Missing"),
                       ("mynets:bad", "must give [N, 10] logits")):  # fmt: skip
        proc = kdbench(*args[:-1], tmp_path / "x", "--student-arch", spec)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    # dropout is the engine's, per member: a module with its own forward cannot take it
    proc = kdbench(*args[:-1], tmp_path / "x", "--teacher-arch", "mynets:Tiny",
                   "--teacher-dropout", "0.5")  # fmt: skip
    assert proc.returncode == 2 and "dropout needs a sequential" in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()


def test_your_own_architecture_from_python(tmp_path, monkeypatch):
    """`study(..., teacher=Factory, student=Factory)` with factories no other process could
    import (defined here, in a function): config.json names them `python:<name>`, the run
    resumes when they are given again, and `kdbench.load(..., module=)` hands a model back whose
    test error is the recorded one; without the factory, one line says how."""
    from kdbench import Config, load, study
    from kdbench.engine import own_code
    from tests.test_datasets import _blobs

    class Wide(nn.Module):  # the teacher
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 3))

        def forward(self, x):
            return self.net(x)

    def small():  # a function returning a fresh module is a factory too
        return nn.Sequential(nn.Linear(20, 6), nn.ReLU(), nn.Linear(6, 3))

    x_train, y_train = _blobs(600, 1)
    x_test, y_test = _blobs(300, 2)
    cfg = Config().with_overrides(repeats=2, members=2, epochs=2, threads=1)
    out = tmp_path / "mine"
    folder, summary = study(x_train, y_train, x_test, y_test, cfg, out, progress=False,
                            measure_latency=False, teacher=Wide, student=small)  # fmt: skip
    saved = json.loads((folder / "config.json").read_text())["config"]
    assert saved["model"]["teacher_arch"] == "python:Wide"
    assert saved["model"]["student_arch"] == "python:small"
    assert (saved["data"]["arrays_features"], saved["data"]["arrays_classes"]) == (20, 3)
    assert summary["rows"]["teacher"]["mean_pct"] < 30  # chance is 67%
    records = (folder / "records.jsonl").read_text()
    monkeypatch.setattr(own_code, "_GIVEN", {})  # as in a new process
    with pytest.raises(ConfigError, match=r"module=Wide"):
        load(folder, "teacher", repeat=1)
    study(x_train, y_train, x_test, y_test, cfg, out, progress=False, measure_latency=False,
          teacher=Wide, student=small)  # fmt: skip
    assert (folder / "records.jsonl").read_text() == records  # resumed: nothing retrained
    monkeypatch.setattr(own_code, "_GIVEN", {})
    net = load(folder, "teacher", repeat=1, module=Wide)
    assert isinstance(net, Wide)
    rec = next(json.loads(line) for line in records.splitlines()
               if '"teacher"' in line and json.loads(line)["repeat"] == 1)  # fmt: skip
    with torch.no_grad():
        error = float((net(torch.from_numpy(x_test)).argmax(1).numpy() != y_test).mean())
    assert error == pytest.approx(rec["test_error"], abs=1e-6)


def test_explain_over_a_conv_architecture(tmp_path):
    """`explain --teacher-arch/--student-arch`: every variant is the conv study, the Keras
    variant (teachers trained along) included."""
    from tests.in_process import kdbench

    out = tmp_path / "ex"
    proc = kdbench("explain", "--out", out, "--variant", "paper", "--variant", "paper-keras",
                   *CONV)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for variant in ("paper", "paper-keras"):
        cfg = json.loads((out / variant / "config.json").read_text())["config"]["model"]
        assert (cfg["teacher_arch"], cfg["student_arch"]) == ("cnn:8", "cnn:4")
    assert "| paper-keras |" in (out / "explain.md").read_text()


def test_the_deployable_built_ins_have_their_papers_sizes():
    """resnet:20 is He et al.'s CIFAR ResNet-20 (1x1 projection shortcuts): its parameters
    counted by hand below; mobilenetv2 at 100% has torchvision's MobileNetV2 parameters for 10
    classes (3,504,872 for 1000 classes, less 990 rows of the 1280-wide head). Both take 28x28x1
    and 32x32x3 images, keep BatchNorm buffers per member, and count their MACs."""
    conv3 = 9
    stage1 = 3 * (2 * 16 * 16 * conv3 + 2 * 32)
    stage2 = (16 * 32 * conv3 + 32 * 32 * conv3 + 16 * 32 + 3 * 64) + 2 * (
        2 * 32 * 32 * conv3 + 128
    )
    stage3 = (32 * 64 * conv3 + 64 * 64 * conv3 + 32 * 64 + 3 * 128) + 2 * (
        2 * 64 * 64 * conv3 + 256
    )
    resnet20 = 3 * 16 * conv3 + 32 + stage1 + stage2 + stage3 + 64 * 10 + 10
    assert resnet20 == 272_474
    cifar = (3, 32, 32)
    assert build("resnet:20", 3072, 10, cifar).parameters_per_member() == resnet20
    mobile = build("mobilenetv2", 3072, 10, cifar)
    assert mobile.parameters_per_member() == 3_504_872 - 990 * 1280 - 990
    # mbv2:8,16,32: stem 3x3 1->8 + BN; block t=1 8->16 (dw 8, BN, project 8->16, BN); block
    # t=6 16->32 (expand 16->96, BN, dw 96, BN, project 96->32, BN); head 32->10
    stem = 9 * 8 + 16
    block1 = 8 * 9 + 16 + 8 * 16 + 32
    block2 = 16 * 96 + 192 + 96 * 9 + 192 + 96 * 32 + 64
    assert build("mbv2:8,16,32", 784, 10, MNIST).parameters_per_member() == (
        stem + block1 + block2 + 32 * 10 + 10
    )
    for spec in ("resnet:8,8", "mobilenetv2:35", "bncnn:4,8", "mbv2:8,16,32"):
        for image in (MNIST, cifar):
            model = build(spec, image[0] * image[1] * image[2], 10, image)
            assert model.input_shape == image and model.macs_per_image() > 0
            assert any(n.endswith("running_var") for n in model.buffer_names())
            params = model.init([1, 2])
            assert len(params) == len(model.tensor_names())
            logits = model.logits(params, torch.rand(3, image[0] * image[1] * image[2]))
            assert logits.shape == (2, 3, 10)
    for spec, says in (("resnet:9", "6n+2"), ("mobilenetv2:50,2", "one width"),
                       ("resnet:8,4,2", "DEPTH[,WIDTH]")):  # fmt: skip
        with pytest.raises(ConfigError, match=None) as exc:
            build(spec, 784, 10, MNIST)
        assert says in str(exc.value)


def test_a_batchnorm_student_with_dropout_from_your_package_end_to_end(tmp_path, monkeypatch):
    """`--student-arch bnnets:Student` (conv, BatchNorm, Dropout) with a `resnet:8` teacher, from
    the command line: reproduce, resume, grow, report, diagnose, export (ONNX against eager), and
    `kdbench.load` (a module in eval mode whose test error is the recorded one, running
    statistics from the checkpoint)."""
    from safetensors import safe_open

    import kdbench as api
    from kdbench.protocol.arrays import splits_of
    from kdbench.runs.store import read_config
    from tests.in_process import kdbench

    (tmp_path / "bnnets.py").write_text(
        "from torch import nn\n"
        "class Student(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False),\n"
        "                                      nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2))\n"
        "        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(96, 10))\n"
        "    def forward(self, x):\n"
        "        return self.head(self.features(x))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "bn"
    args = ["reproduce", "--dataset", "digits", "--teacher-arch", "resnet:8,4", "--student-arch",
            "bnnets:Student", "--members", "2", "--epochs", "2", "--threads", "1", "--quiet",
            "--no-latency", "--out", run]  # fmt: skip
    assert kdbench(*args, "--repeats", "1").returncode == 0
    first = (run / "records.jsonl").read_text()
    assert kdbench(*args, "--repeats", "2").returncode == 0  # grown: repeat 0 kept as it was
    assert (run / "records.jsonl").read_text().startswith(first)
    records = (run / "records.jsonl").read_text()
    assert kdbench(*args, "--repeats", "2").returncode == 0  # resumed: nothing retrained
    assert (run / "records.jsonl").read_text() == records
    with safe_open(str(run / "checkpoints" / "small_networks.safetensors"), "pt") as fh:
        assert "features.1.running_mean" in fh.keys()  # noqa: SIM118 (not a dict)
        assert fh.get_tensor("features.1.num_batches_tracked").shape == (2 * 3,)
    for command in (["report", run, "--measure"], ["diagnose", run]):
        proc = kdbench(*command)
        assert proc.returncode == 0, proc.stderr
    assert "| Student / ensemble member | bnnets:Student |" in (run / "report.md").read_text()
    proc = kdbench("export", run, "--role", "student_from_teacher", "--repeat", "1", "--int8")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(next((run / "exports").rglob("*-r1.json")).read_text())
    assert info["max_abs_diff_vs_torch"] < 1e-4
    assert info["test_error_onnx"] == info["test_error_torch"]
    splits = splits_of(read_config(run), run)
    for line in records.splitlines():
        rec = json.loads(line)
        if rec["kind"] == "model" and rec["role"] in ("student_hard", "teacher"):
            net = api.load(run, rec["role"], repeat=rec["repeat"])
            assert not net.training and net.input_shape == (1, 8, 8)
            with torch.no_grad():
                x = splits.x_test.view(-1, *net.input_shape)
                error = float((net(x).argmax(1) != splits.y_test).float().mean())
            assert error == pytest.approx(rec["test_error"], abs=1e-6), rec["role"]
    student = api.load(run, "student_hard", repeat=1)
    assert float(student.features[1].running_var.sub(1).abs().max()) > 1e-3  # trained statistics
