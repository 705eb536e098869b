"""Named presets resolve to their documented settings and compose with explicit flags."""

from __future__ import annotations

import json

import pytest

from kdbench.config import Config
from kdbench.errors import ConfigError
from kdbench.protocol.presets import PRESETS, resolve
from tests.in_process import kdbench

EXPECTED = {
    "paper": {},
    "paper-softmax-head": {("model", "head"): "softmax"},
    "restore-best": {("train", "restore_best"): True},
    "watch-error": {("train", "monitor"): "val_error"},
    "hard-monitor": {("distill", "kd_monitor"): "hard"},
    "paper-keras": {("distill", "teacher_updates"): "joint"},
    "paper-keras-train-loss": {
        ("distill", "teacher_updates"): "joint",
        ("train", "monitor"): "train_loss",
    },
    "hinton": {
        ("model", "teacher_hidden"): (1200, 1200),
        ("model", "student_hidden"): (800, 800),
        ("distill", "temperature"): 20.0,
        ("model", "teacher_dropout"): 0.5,
        ("model", "teacher_input_dropout"): 0.2,
        ("model", "teacher_jitter"): 2,
    },
}
EXPECTED["hinton-strong"] = {
    **EXPECTED["hinton"],
    ("model", "teacher_max_norm"): 3.0,
    ("train", "teacher_epochs"): 100,
    ("train", "teacher_lr_decay"): 0.98,
    ("protocol", "members"): 3,
}
EXPECTED["controls"] = {("distill", "controls"): "smoothing,smoothing-matched,self"}
EXPECTED["conv-teacher"] = {**EXPECTED["controls"], ("model", "teacher_arch"): "lenet5"}
EXPECTED["conv"] = {**EXPECTED["conv-teacher"], ("model", "student_arch"): "cnn:4,8"}
EXPECTED["methods"] = {("distill", "controls"): "smoothing", ("distill", "dkd_warmup"): 2}
EXPECTED["deploy"] = {
    ("model", "teacher_arch"): "resnet:8,8",
    ("model", "student_arch"): "mbv2:8,16,32",
    ("train", "optimizer"): "sgd",
    ("train", "learning_rate"): 0.05,
    ("train", "nesterov"): True,
    ("train", "weight_decay"): 5e-4,
    ("train", "lr_schedule"): "cosine",
    ("train", "epochs"): 15,
    ("train", "augment"): "crop,flip",
    ("train", "crop_padding"): 3,
    ("distill", "temperature"): 4.0,
    ("distill", "controls"): "smoothing,self",
    ("protocol", "members"): 5,
    ("data", "train_limit"): 10000,
}


def _changed(cfg: Config) -> dict:
    base, got = Config().to_dict(), cfg.to_dict()
    return {
        (sec, key): value
        for sec, fields in got.items()
        if isinstance(fields, dict)
        for key, value in fields.items()
        if base[sec][key] != value
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_resolves_to_its_documented_settings(name):
    cfg = resolve(name)
    assert cfg.preset == name
    assert _changed(cfg) == EXPECTED[name]


def test_paper_preset_is_protocol_md():
    cfg = resolve("paper")
    assert cfg.model.teacher_hidden == (500, 400, 300, 200, 100)
    assert cfg.model.student_hidden == (100,)
    assert (cfg.distill.temperature, cfg.distill.alpha, cfg.model.head) == (10.0, 0.1, "logits")
    assert (cfg.train.patience, cfg.train.restore_best) == (2, False)


def test_explicit_flags_win_over_the_preset():
    cfg = resolve("hinton", temperature=4.0, repeats=3)
    assert cfg.distill.temperature == 4.0
    assert cfg.protocol.repeats == 3
    assert cfg.model.student_hidden == (800, 800)  # the rest of the preset stays


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'.*hinton"):
        resolve("nope")


def test_cli_lists_presets_and_records_the_preset_in_the_run_folder(tmp_path):
    listed = kdbench("presets").stdout
    for name in PRESETS:
        assert name in listed
    out = tmp_path / "run"
    cmd = ["reproduce", "--preset", "paper-softmax-head"]
    cmd += ["--train-limit", "600", "--repeats", "1", "--members", "2", "--epochs", "1"]
    cmd += ["--quiet", "--no-latency", "--out", str(out)]
    assert kdbench(*cmd).returncode == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["preset"] == "paper-softmax-head"
    assert saved["model"]["head"] == "softmax"


def test_old_run_folder_without_new_settings_still_resumes(tmp_path):
    from kdbench.runs.store import RunStore

    cfg = Config().to_dict()
    old = json.loads(json.dumps(cfg))
    for key in ("head", "teacher_dropout", "teacher_input_dropout"):
        del old["model"][key]
    del old["preset"]
    (tmp_path / "config.json").write_text(json.dumps({"config": old}))
    assert RunStore(tmp_path, {"config": cfg}).resumed
