"""`ticketlab find` end to end on an image folder made in the test: a deep model with batch
norm, a run named after the folder, and a second run that decodes and trains nothing."""

from __future__ import annotations

import json
import re

from tests.data.test_data_imagefolder import make_tree
from tests.test_cli import cli, run_dir
from ticketlab.config import ExperimentConfig
from ticketlab.data import imagefolder
from ticketlab.experiments import imp


def test_find_on_an_image_folder_then_reuse(tmp_path, capsys, monkeypatch):
    root = make_tree(tmp_path / "pets")  # 9 training images (1 held out), 3 test images
    out = tmp_path / "runs"
    argv = ["find", "--dataset", f"imagefolder:{root}", "--image-size", "8",
            "--model", "cifar_resnet_8", "--train", "10it", "--eval-every", "5it",
            "--batch-size", "4", "--levels", "1", "--controls", "reinit", "--out", str(out),
            "--quiet"]
    code, printed, err = cli(capsys, *argv)
    assert code == 0, err
    run = run_dir(out)
    assert re.fullmatch(r"imp_cifar_resnet_8_imagefolder-pets_[0-9a-f]{10}", run.name), run.name
    config = json.loads((run / "config.json").read_text())
    science = config["science"]
    assert science["data"]["dataset"] == f"imagefolder:{root.resolve()}"
    assert science["data"]["image_size"] == 8  # not the default: part of the name
    assert ExperimentConfig.from_science(science).run_name() == run.name
    assert config["units_trained"].startswith("one by one")
    assert (root / ".ticketlab-8px.safetensors").is_file()  # the decoded images, cached
    summary = json.loads((run / "summary.json").read_text())
    assert [(r["level"], r["variant"]) for r in summary["records"]] == [
        (0, "ticket"), (1, "ticket"), (1, "reinit")]
    assert all(r["end_iteration"] == 10 for r in summary["records"])

    def must_not(*args, **kwargs):
        raise AssertionError("the second run decoded or trained")

    monkeypatch.setattr(imagefolder, "decode", must_not)
    monkeypatch.setattr(imp, "train", must_not)
    code, again, err = cli(capsys, *argv)
    assert code == 0, err
    assert [p.name for p in out.iterdir()] == [run.name]
    assert json.loads((run / "summary.json").read_text()) == summary
    assert "early stop" in printed and again == printed  # the same table, read back
