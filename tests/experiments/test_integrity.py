"""Damaged files in a run directory: checksums, kinds, owners, required keys; the advice works.

Each case damages one file of a finished tiny run, checks that the next command stops with
one line naming the file and the unit folder, then follows the advice (delete the folder, or
`--recompute`) and checks that the run completes with the records it had before.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ticketlab.cli import main
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore, Unit

FIND = ["find", "--train", "20it", "--eval-every", "10it", "--controls", "random", "--quiet"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def find(capsys, out: Path, levels: int, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, *FIND, "--levels", str(levels), "--out", str(out), *extra)


def records(run: Path) -> list[dict]:
    return json.loads((run / "summary.json").read_text())["records"]


@pytest.fixture
def finished(tmp_path, capsys) -> tuple[Path, list[dict]]:
    """A finished one-level run, and the two-level records it grows into when undamaged."""
    ref = tmp_path / "reference"
    assert find(capsys, ref, 2)[0] == 0
    (run,) = ref.iterdir()
    expected = records(run)
    out = tmp_path / "runs"
    assert find(capsys, out, 1)[0] == 0
    (run,) = out.iterdir()
    return run, expected


def one_line_error(err: str, file: str, folder: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert file in lines[0] and "damaged" in lines[0]
    assert f"delete the folder {folder} " in lines[0] and "--recompute" in lines[0]
    return lines[0]


def follow(capsys, run: Path, err: str, how: str, levels: int = 2) -> None:
    """Does what the message says, then the same command completes."""
    if how == "delete":
        folder = re.search(r"delete the folder (\S+) ", err).group(1)
        shutil.rmtree(run / folder)
        code, _, err = find(capsys, run.parent, levels)
    else:
        code, _, err = find(capsys, run.parent, levels, "--recompute")
        assert "recomputing" in err
    assert code == 0, err


def flip_bit(path: Path, from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 0x01  # in the tensor payload, not the header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["delete", "recompute"])
def test_flipped_bit_in_weights(finished, capsys, how):
    run, expected = finished
    flip_bit(run / "seed_0/level_01/ticket/final.safetensors")
    code, _, err = find(capsys, run.parent, 2)
    assert code == 2
    one_line_error(err, "level_01/ticket/final.safetensors", "seed_0/level_01/ticket")
    follow(capsys, run, err, how)
    assert records(run) == expected


def test_flipped_bit_in_mask(finished, capsys):
    run, expected = finished
    path = run / "seed_0/level_01/ticket/mask.safetensors"
    flip_bit(path)
    code, _, err = find(capsys, run.parent, 2)
    assert code == 2
    one_line_error(err, "level_01/ticket/mask.safetensors", "seed_0/level_01/ticket")
    follow(capsys, run, err, "delete")
    assert records(run) == expected


def test_nans_resaved_with_a_fresh_header(finished, capsys):
    """The file is valid safetensors without a checksum: result.json's checksum catches it."""
    run, expected = finished
    path = run / "seed_0/level_00/ticket/rewind.safetensors"
    state = load_file(path)
    state["fc1.weight"][0, :3] = float("nan")
    save_file(state, path)
    code, _, err = find(capsys, run.parent, 2)
    assert code == 2
    line = one_line_error(err, "level_00/ticket/rewind.safetensors", "seed_0/level_00/ticket")
    assert "result.json" in line
    follow(capsys, run, err, "recompute")
    assert records(run) == expected


def test_mask_in_place_of_weights(finished, capsys):
    run, expected = finished
    unit = run / "seed_0/level_01/ticket"
    shutil.copy(unit / "mask.safetensors", unit / "final.safetensors")
    code, _, err = find(capsys, run.parent, 2)
    assert code == 2
    line = one_line_error(err, "final.safetensors", "seed_0/level_01/ticket")
    assert "holds a mask, not weights" in line
    follow(capsys, run, err, "delete")
    assert records(run) == expected


def test_file_swapped_in_from_another_unit(finished, capsys):
    """Each file is intact, but not the one its unit wrote."""
    run, expected = finished
    shutil.copy(run / "seed_0/level_01/random/final.safetensors",
                run / "seed_0/level_01/ticket/final.safetensors")
    code, _, err = find(capsys, run.parent, 2)
    assert code == 2
    one_line_error(err, "level_01/ticket/final.safetensors", "seed_0/level_01/ticket")
    follow(capsys, run, err, "recompute")
    assert records(run) == expected


def _checkpoint_state() -> dict:
    return {"step": 10, "model": {}, "optimizer": {}, "rng": torch.get_rng_state(),
            "metrics": [], "seeds": [0]}


def test_checkpoint_copied_from_another_unit(finished, capsys):
    run, expected = finished
    store = RunStore.open(run)
    ticket, random = Unit(0, 1, "ticket"), Unit(0, 1, "random")
    store.checkpoint(ticket, 0).save(_checkpoint_state())
    shutil.move(store.dir(ticket) / "checkpoint.pt", store.dir(random) / "checkpoint.pt")
    (store.dir(random) / "result.json").unlink()  # so that it resumes from the checkpoint
    code, _, err = find(capsys, run.parent, 1)
    assert code == 2
    line = one_line_error(err, "level_01/random/checkpoint.pt", "seed_0/level_01/random")
    assert "belongs to" in line and "seed_0/level_01/ticket" in line
    follow(capsys, run, err, "recompute", levels=1)
    assert records(run) == [r for r in expected if r["level"] <= 1]


@pytest.mark.parametrize("key", ["step", "optimizer", "model"])
def test_checkpoint_with_missing_keys(finished, capsys, key):
    run, expected = finished
    unit = run / "seed_0/level_01/random"
    state = _checkpoint_state()
    del state[key]
    torch.save(state, unit / "checkpoint.pt")
    (unit / "result.json").unlink()
    code, _, err = find(capsys, run.parent, 1)
    assert code == 2
    assert f"missing {key}" in one_line_error(err, "checkpoint.pt", "seed_0/level_01/random")
    follow(capsys, run, err, "delete", levels=1)
    assert records(run) == [r for r in expected if r["level"] <= 1]


def test_result_with_a_missing_key(finished, capsys):
    run, expected = finished
    path = run / "seed_0/level_01/ticket/result.json"
    record = json.loads(path.read_text())
    del record["early_stop_iteration"]
    path.write_text(json.dumps(record))
    code, _, err = find(capsys, run.parent, 2)
    assert code == 2
    line = one_line_error(err, "level_01/ticket/result.json", "seed_0/level_01/ticket")
    assert "early_stop_iteration" in line
    follow(capsys, run, err, "delete")
    assert records(run) == expected


def test_metrics_with_a_missing_column(finished, capsys, tmp_path):
    run, _ = finished
    path = run / "seed_0/level_00/ticket/metrics.csv"
    with open(path, newline="") as f:
        rows = [{k: v for k, v in r.items() if k != "loss"} for r in csv.DictReader(f)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["iteration", "split", "accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    code, _, err = cli(capsys, "report", str(run), "--quiet", "--out", str(tmp_path / "r"))
    assert code == 2
    assert "no column loss" in one_line_error(err, "metrics.csv", "seed_0/level_00/ticket")
    follow(capsys, run, err, "recompute", levels=1)
    assert cli(capsys, "report", str(run), "--quiet", "--out", str(tmp_path / "r"))[0] == 0


def test_files_of_older_versions_are_accepted(finished, capsys):
    """No checksum or kind in the tensor files, no checksums in result.json (0.1's files)."""
    run, expected = finished
    for path in run.glob("seed_*/level_*/*/*.safetensors"):
        with safe_open(path, "pt") as f:
            meta = {k: v for k, v in f.metadata().items() if k in ("format", "groups")}
        save_file(load_file(path), path, metadata=meta or None)
    for path in run.glob("seed_*/level_*/*/result.json"):
        record = json.loads(path.read_text())
        del record["files"]
        path.write_text(json.dumps(record))
    code, _, err = find(capsys, run.parent, 2)
    assert code == 0, err
    assert records(run) == expected


def test_a_damaged_donor_run_is_not_borrowed_from(finished, capsys, tmp_path):
    """Level 0 is copied from a sibling run only if all its files check out."""
    run, _ = finished
    flip_bit(run / "seed_0/level_00/ticket/final.safetensors")
    code, _, err = cli(capsys, *FIND, "--levels", "1", "--rate", "0.5", "--out", str(run.parent))
    assert code == 0, err
    (other,) = [d for d in run.parent.iterdir() if d != run]
    store = RunStore.open(other)
    store.load_weights(Unit(0, 0, "ticket"), "final")  # its own, undamaged
    with pytest.raises(TicketlabError, match="damaged"):
        RunStore.open(run).load_weights(Unit(0, 0, "ticket"), "final")
