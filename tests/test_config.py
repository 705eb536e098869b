"""Configuration: defaults are the paper's, impossible settings are refused with the fix."""

from __future__ import annotations

import pytest

from kdbench.config import Config
from kdbench.errors import ConfigError
from kdbench.settings import config_diff


def test_defaults_are_the_papers_study():
    c = Config()
    assert c.model.teacher_hidden == (500, 400, 300, 200, 100)
    assert c.model.student_hidden == (100,)
    assert (c.protocol.repeats, c.protocol.members) == (10, 10)
    assert (c.train.learning_rate, c.train.batch_size, c.train.patience) == (1e-3, 32, 2)
    assert (c.distill.alpha, c.distill.temperature) == (0.1, 10.0)


def test_roundtrip_through_dict():
    c = Config().with_overrides(temperature=4.0, repeats=3, student_hidden=(50, 20))
    assert Config.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "override, flag",
    [
        ({"temperature": 0.0}, "--temperature"),
        ({"temperature": -1.0}, "--temperature"),
        ({"alpha": 1.5}, "--alpha"),
        ({"alpha": -0.1}, "--alpha"),
        ({"teacher_hidden": ()}, "--teacher-hidden"),
        ({"student_hidden": (100, 0)}, "--student-hidden"),
        ({"repeats": 0}, "--repeats"),
        ({"members": 0}, "--members"),
        ({"epochs": 0}, "--epochs"),
        ({"patience": 0}, "--patience"),
        ({"batch_size": 0}, "--batch-size"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_impossible_settings_name_the_flag(override, flag):
    with pytest.raises(ConfigError, match=flag):
        Config().with_overrides(**override)


def test_config_diff_names_settings():
    a = Config().to_dict()
    b = Config().with_overrides(alpha=0.5, seed=3).to_dict()
    assert config_diff(a, b) == ["distill.alpha", "protocol.seed"]


def test_every_setting_is_one_flag_whose_help_shows_the_config_default():
    """reproduce's flags come from one declaration tied to config.py: a new setting without a
    flag, or a help default that differs from the dataclass default, fails here."""
    import dataclasses

    from typer.testing import CliRunner

    from kdbench.cli.app import app
    from kdbench.cli.options import FLAGS, NOT_FLAGS, default_of
    from kdbench.config import TOP_LEVEL, flat_index

    settings = set(flat_index()) | set(TOP_LEVEL)
    assert set(FLAGS) == settings - set(NOT_FLAGS)
    out = CliRunner().invoke(app, ["reproduce", "--help"], env={"COLUMNS": "400"}).output
    out = " ".join(out.split())  # plain help wraps its columns
    for flag in FLAGS.values():
        assert flag.name in out
    assert "Learning rate (Adam's or SGD's). [default: 0.001]" in out
    assert f"[default: {default_of('temperature'):g}]" in out
    assert dataclasses.fields(Config)  # the defaults above are read from here
