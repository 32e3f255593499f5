"""Bad input, table-driven: each case is a command line (or a TOML config file) and a
fragment of the one-line error it must give, with exit code 2, no traceback and nothing
written. Cases come from issue 9 (Reliability, First contact) and every key's wrong type."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from tests.test_cli import cli, run_cli
from ticketlab.cli import RUNTIME_KEYS
from ticketlab.config import _typed_fields, runtime_hints

ARGV_CASES = [
    (["--lr", "inf"], "lr must be a finite number > 0, got inf: e.g. --lr"),
    (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
    (["--weight-decay", "inf"], "weight decay must be a finite number >= 0, got inf"),
    (["--weight-decay", "nan"], "weight decay must be a finite number >= 0, got nan"),
    (["--weight-decay", "-0.1"], "weight decay must be a finite number >= 0"),
    (["--gamma", "nan"], "gamma must be a finite number > 0, got nan"),
    (["--gamma", "inf"], "gamma must be a finite number > 0, got inf"),
    (["--gamma", "0"], "gamma must be a finite number > 0, got 0.0"),
    (["--momentum", "nan"], "momentum must be a finite number in [0, 1), got nan"),
    (["--momentum", "1"], "momentum must be a finite number in [0, 1), got 1.0"),
    (["--checkpoint-every", "nan"], "--checkpoint-every must be a finite number of seconds"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be a finite number of seconds >= 0,"
                                   " got -1.0"),
    (["--checkpoint-every", "inf"], "--checkpoint-every must be a finite number"),
    (["--device", "meta"], "unknown device 'meta': use auto, cpu, cuda, cuda:N or mps"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--device", "CPU"], "unknown device 'CPU'"),
    (["--rates", "fcc=0.2"], "unknown group 'fcc' in --rates: lenet_300_100 has the groups "
                             "fc, output"),
    (["--model", "conv2", "--rates", "conv=0.1,convs=0.1"], "unknown group 'convs' in --rates: "
                                                            "conv2 has the groups conv, fc"),
    (["--exclude", "conv"], "unknown group 'conv' in --exclude: lenet_300_100 has the groups"),
    (["--exclude", "output,hidden"], "unknown group 'hidden' in --exclude"),
    (["--seeds", "0,0"], "seeds repeat (0,0)"),
    (["--seeds", "1,2,1"], "seeds repeat (1,2,1)"),
    (["--seeds", "-1"], "seed -1 is negative"),
    (["--seeds", "0,-3"], "seed -3 is negative"),
    (["--model", "conv_lenet"], "model conv_lenet does not fit dataset digits (1x8x8 images): "
                                "it needs images of at least 16x16 pixels"),
    (["--model", "conv_lenet", "--dataset", "DIGITS"], "does not fit dataset digits"),
    (["--validation-size", "0"], "validation size must be >= 1, got 0"),
    (["--optimizer", "lion"], "invalid choice"),
    (["--train", "05"], "not a step"),
]

TOML_CASES = [
    ('lr = "abc"', "setting 'lr' is \"abc\" (str): expected a number, e.g. lr = 0.0012"),
    ('levels = "3"', "setting 'levels' is \"3\" (str): expected an integer, e.g. levels = 10"),
    ("batch_size = 1.5", "setting 'batch_size' is 1.5 (float): expected an integer"),
    ("seeds = 3", "setting 'seeds' is 3 (int): expected a list of integers, e.g. seeds = [0]"),
    ("rates = 0.2", "setting 'rates' is 0.2 (float): expected a table of string = number"),
    ("out = 5", "setting 'out' is 5 (int): expected a path string, e.g. out = \"runs\""),
    ('rates = {fc = "a"}', "setting 'rates' is {fc = \"a\"} (dict): expected a table"),
    ("seeds = [1.5]", "setting 'seeds' is [1.5] (list): expected a list of integers"),
    ('seeds = ["0"]', "setting 'seeds' is [\"0\"] (list)"),
    ("seeds = true", "setting 'seeds' is true (bool)"),
    ('nesterov = "yes"', "setting 'nesterov' is \"yes\" (str): expected a boolean"),
    ("nesterov = 1", "setting 'nesterov' is 1 (int): expected a boolean"),
    ('controls = "reinit"', "setting 'controls' is \"reinit\" (str): expected a list of "
                            "strings"),
    ("milestones = [100]", "setting 'milestones' is [100] (list): expected a list of strings"),
    ("one_shot = 0.5", "setting 'one_shot' is 0.5 (float): expected a list of numbers"),
    ('exclude = "output"', "setting 'exclude' is \"output\" (str): expected a list of strings"),
    ("train = 500", "setting 'train' is 500 (int): expected a string, e.g. train = \"40ep\""),
    ("model = 5", "setting 'model' is 5 (int): expected a string"),
    ('threshold = "1"', "setting 'threshold' is \"1\" (str): expected a number (or left out)"),
    ("validation_size = true", "setting 'validation_size' is true (bool): expected an integer"),
    ("device = 5", "setting 'device' is 5 (int): expected a string, e.g. device = \"auto\""),
    ('quiet = "no"', "setting 'quiet' is \"no\" (str): expected a boolean"),
    ('checkpoint_every = "60"', "setting 'checkpoint_every' is \"60\" (str): expected a number"),
    ("data_dir = 5", "setting 'data_dir' is 5 (int): expected a path string (or left out)"),
    ("download = 1", "setting 'download' is 1 (int): expected a boolean"),
    ('vectorize = "on"', "setting 'vectorize' is \"on\" (str): expected a boolean"),
    ('[training]\nlr = "abc"', "setting 'lr' is \"abc\""),
    ("[pruning]\nrates = 0.2", "setting 'rates' is 0.2"),
    ("[data]\nbatch-size = 1.5", "setting 'batch_size' is 1.5"),
    ("lr = nan", "lr must be a finite number > 0, got nan"),
    ("lr = inf", "lr must be a finite number > 0, got inf"),
    ("weight_decay = inf", "weight decay must be a finite number >= 0, got inf"),
    ("gamma = nan", "gamma must be a finite number > 0, got nan"),
    ("momentum = nan", "momentum must be a finite number in [0, 1)"),
    ("checkpoint_every = nan", "--checkpoint-every must be a finite number"),
    ("checkpoint_every = -1", "--checkpoint-every must be a finite number of seconds >= 0"),
    ('device = "meta"', "unknown device 'meta'"),
    ("seeds = [0, 0]", "seeds repeat"),
    ("seeds = [-1]", "seed -1 is negative"),
    ('exclude = ["bogus"]', "unknown group 'bogus' in --exclude"),
    ("rates = {fcc = 0.2}", "unknown group 'fcc' in --rates"),
    ('model = "conv_lenet"', "model conv_lenet does not fit dataset digits"),
    ("learning_rate = 3", "unknown setting 'learning_rate'"),
    ('training = "fast"', "unknown setting 'training'"),
]


def _wrong_toml(hint) -> str:
    """A TOML value of the wrong type for a field of type `hint`."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "3"
    if origin is dict:
        return "0.2"
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if set(args) == {int, str}:  # a count or a word (threads = 2 or "auto")
        return "1.5"
    return {str: "5", int: '"3"', float: '"abc"', bool: '"yes"', Path: "5"}[args[0]]


# Every key a config file accepts, from the dataclasses: a wrongly typed value is named.
_HINTS = {k: h for k, (_, h) in _typed_fields().items()}
_HINTS.update({k: runtime_hints()[k] for k in RUNTIME_KEYS})
EVERY_KEY_CASES = [(f"{key} = {_wrong_toml(hint)}", f"setting '{key}' is ")
                   for key, hint in sorted(_HINTS.items())]


def _check(code: int, err: str, needle: str, tmp_path: Path) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["run.toml"])  # nothing started


@pytest.mark.parametrize("argv, needle", ARGV_CASES, ids=[" ".join(a) for a, _ in ARGV_CASES])
def test_bad_flags(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)  # the default --out, ./runs, must not appear
    code, _, err = cli(capsys, "find", *argv)
    _check(code, err, needle, tmp_path)


@pytest.mark.parametrize("text, needle", TOML_CASES + EVERY_KEY_CASES,
                         ids=[t for t, _ in TOML_CASES + EVERY_KEY_CASES])
def test_bad_config_files(tmp_path, monkeypatch, capsys, text, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(text + "\n")
    code, _, err = cli(capsys, "find", "--config", "run.toml")
    _check(code, err, needle, tmp_path)


def test_case_count():
    """The table's size, for the notes; it only grows."""
    assert len(ARGV_CASES) + len(TOML_CASES) + len(EVERY_KEY_CASES) >= 100


@pytest.mark.parametrize("argv, text, needle", [
    (["--device", "meta"], None, "unknown device 'meta'"),
    ([], "out = 5\n", "setting 'out' is 5"),
])
def test_bad_input_in_a_real_process(tmp_path, argv, text, needle):
    if text:
        (tmp_path / "run.toml").write_text(text)
        argv = [*argv, "--config", str(tmp_path / "run.toml")]
    result = run_cli("find", *argv, "--model", "conv_lenet")  # the first error wins
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert needle in result.stderr and "Traceback" not in result.stderr
