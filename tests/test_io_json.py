"""JSON files are strict JSON: non-finite numbers are written as null."""

import json
import math

import pytest

from ticketlab.io import read_json, write_json


def test_non_finite_numbers_become_null(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"loss": math.nan, "a": [1.5, math.inf, (-math.inf, 2)],
                      "nested": {"x": math.nan, "ok": 0.25, "n": 3, "flag": True, "none": None}})

    def refuse(name):
        raise ValueError(name)

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "loss": None, "a": [1.5, None, [None, 2]],
        "nested": {"x": None, "ok": 0.25, "n": 3, "flag": True, "none": None}}
    assert read_json(path)["nested"]["ok"] == 0.25


def test_objects_json_cannot_write_still_fail(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()
