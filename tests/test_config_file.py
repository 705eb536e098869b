"""Settings from a file (`--config`): `kdbench config show` writes what `--config` reads back
to the same configuration, a finished run's config.json redoes it, flags override the file,
and a bad file is one line naming the file and the key."""

from __future__ import annotations

import json

import pytest

from kdbench.cli import config_file
from kdbench.cli.config_file import resolve_with
from kdbench.errors import ConfigError
from kdbench.protocol.presets import PRESETS, resolve
from tests.in_process import kdbench


@pytest.mark.parametrize("preset", list(PRESETS))
def test_config_show_round_trips_every_preset(tmp_path, preset):
    shown = kdbench("config", "show", "--preset", preset, "--temperature", "4", "--repeats", "3")
    assert shown.returncode == 0, shown.stderr
    config_file.tomllib.loads(shown.stdout)  # valid TOML
    path = tmp_path / "study.toml"
    path.write_text(shown.stdout)
    want = resolve(preset, temperature=4.0, repeats=3)
    assert resolve_with(path, None, {}) == want
    # the file's preset is kept; a flag on top wins over the file
    assert resolve_with(path, None, {"alpha": 0.5}) == resolve(
        preset, temperature=4.0, repeats=3, alpha=0.5
    )


def test_a_short_file_is_its_changes_and_the_preset_flag_wins(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(
        'preset = "hinton"\n[distill]\ntemperature = 8\n[model]\nstudent_hidden = [30]\n'
    )
    assert resolve_with(path, None, {}) == resolve("hinton", temperature=8.0, student_hidden=(30,))
    # --preset replaces the file's preset; the file's changes stay on top of it
    assert resolve_with(path, "paper", {}) == resolve(
        "paper", temperature=8.0, student_hidden=(30,)
    )


def test_a_finished_runs_config_json_redoes_it(tmp_path):
    out = tmp_path / "run"
    args = ["--dataset", "digits", "--teacher-hidden", "16", "--student-hidden", "8"]
    args += ["--repeats", "2", "--members", "2", "--epochs", "1", "--threads", "1"]
    first = kdbench("reproduce", *args, "--preset", "hard-monitor", "--quiet", "--no-latency",
                    "--out", out)  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = tmp_path / "again"
    redo = kdbench("reproduce", "--config", out / "config.json", "--quiet", "--no-latency",
                   "--out", again)  # fmt: skip
    assert redo.returncode == 0, redo.stderr
    a = json.loads((out / "config.json").read_text())["config"]
    b = json.loads((again / "config.json").read_text())["config"]
    assert a == b
    from kdbench.runs.store import read_records

    errors = [{r.key: r.test_error for r in read_records(f)} for f in (out, again)]
    assert errors[0] == errors[1] and len(errors[0]) > 5  # the same study, redone


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[distill]\ntemprature = 4\n", "unknown key 'distill.temprature' (did you mean"),
        ("[train]\ntemperature = 4\n", "unknown key 'train.temperature'"),
        ("colour = 1\n", "unknown key 'colour'"),
        ('[distill]\ntemperature = "hot"\n', "key 'distill.temperature' has the wrong type"),
        ("[model]\nstudent_hidden = 100\n", "expected a list of whole numbers"),
        ("[protocol]\nrepeats = 2.5\n", "expected a whole number"),
        ("[distill]\nalpha = 1.5\n", "alpha must be in [0, 1]"),
        ("[distill\n", "is not valid TOML"),
        ('preset = "hintn"\n', "did you mean hinton"),
        ("[protocol]\nrepeats = 1000000000\n", "repeats must be at most 1000"),
        ("[protocol]\nmembers = 1000000000\n", "members must be at most 1000"),
        ("[protocol]\nrepeats = " + "[" * 5000 + "]" * 5000 + "\n", "bad.toml"),
    ],
)
def test_a_bad_file_is_one_line_naming_it_and_nothing_is_written(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "run"
    proc = kdbench("reproduce", "--config", path, "--out", out, "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "bad.toml" in proc.stderr
    assert not out.exists()


def test_a_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes("[data]\ndataset = 'caf\u00e9'\n".encode("latin-1"))
    proc = kdbench("reproduce", "--config", path, "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 2 and "is not UTF-8 text" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_missing_config_file_is_one_line(tmp_path):
    proc = kdbench("sweep", "--config", tmp_path / "none.toml", "--grid", "alpha=0.1",
                   "--out", tmp_path / "s")  # fmt: skip
    assert proc.returncode == 2 and "none.toml" in proc.stderr
    with pytest.raises(ConfigError, match="give a readable file"):
        resolve_with(tmp_path / "none.toml", None, {})
