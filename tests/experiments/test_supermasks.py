import json

import pytest

from tests.conftest import tiny_config
from tests.test_cli import cli
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore
from ticketlab.experiments.supermasks import scan_supermasks, with_same_sign


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    from ticketlab.config import Runtime
    out = tmp_path_factory.mktemp("runs")
    config = tiny_config(levels=0, train="150it", seeds=(0, 1))
    run_imp(config, Runtime(out=out, device="cpu", quiet=True))
    return RunStore(out / config.run_name())


def test_with_same_sign_adds_registered_variants():
    assert with_same_sign(("large_final", "small_final", "movement")) == \
        ["large_final", "large_final_same_sign", "small_final", "movement"]


def test_scan_scores_every_criterion_and_density_without_training(dense_run):
    files = {p: p.read_bytes() for p in dense_run.root.rglob("*.safetensors")}
    records = scan_supermasks(dense_run, (0.5, 0.1), ("large_final", "small_final"), seed=1,
                              device="cpu")
    assert records[0]["criterion"] == "dense" and records[0]["density"] == 1.0
    records = records[1:]
    names = [r["criterion"] for r in records]
    assert names == ["large_final", "large_final_same_sign", "small_final", "random_mask"] * 2
    for r in records:
        assert r["density"] == pytest.approx(r["target_density"], abs=1e-3)
        assert 0 <= r["test_accuracy"] <= 1 and r["seed"] == 1
    at = {(r["criterion"], r["target_density"]): r["test_accuracy"] for r in records}
    # the untrained network under the large-magnitude masks beats the small ones by far
    assert at["large_final_same_sign", 0.5] > at["small_final", 0.5] + 0.2
    assert {p: p.read_bytes() for p in dense_run.root.rglob("*.safetensors")} == files


def test_supermask_cli(dense_run, capsys):
    code, out, _ = cli(capsys, "supermask", str(dense_run.root), "--densities", "0.3",
                       "--criteria", "large_final", "--quiet", "--device", "cpu")
    assert code == 0 and "large_final_same_sign" in out and "random_mask" in out
    saved = json.loads((dense_run.root / "supermask" / "seed_0_rewind.json").read_text())
    assert [r["criterion"] for r in saved] == ["dense", "large_final", "large_final_same_sign",
                                               "random_mask"]
    assert (dense_run.root / "supermask" / "seed_0_rewind.png").read_bytes()[:4] == b"\x89PNG"
    for argv, needle in [(["--criteria", "biggest"], "unknown criterion 'biggest'"),
                         (["--densities", "1.5"], "(0, 1)"),
                         (["--seed", "7"], "seed 7 has no finished dense level"),
                         (["--alpha", "-1"], "alpha must be a finite number >= 0")]:
        code, _, err = cli(capsys, "supermask", str(dense_run.root), "--quiet", *argv)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_threshold_mask_rows(dense_run):
    records = scan_supermasks(dense_run, (), (), alpha=1.0, device="cpu")
    _, threshold, random = records
    assert [r["criterion"] for r in records] == ["dense", "threshold", "random_mask"]
    assert 0 < threshold["density"] < 0.5  # mean|w| + 1 std keeps a minority
    assert random["density"] == pytest.approx(threshold["density"])


def test_learned_supermask_row(dense_run):
    records = scan_supermasks(dense_run, (), (), learn=150, device="cpu")
    assert [r["criterion"] for r in records] == ["dense", "learned", "learned_sampled"]
    assert records[1]["test_accuracy"] > 0.5  # digits: chance is 0.1
    assert (dense_run.root / "supermask" / "seed_0_learned_mask.safetensors").is_file()


def test_supermask_cli_with_no_densities_or_criteria(dense_run, capsys):
    code, _, _ = cli(capsys, "supermask", str(dense_run.root), "--densities", "none",
                       "--criteria", "none", "--alpha", "0.5", "--quiet", "--device", "cpu")
    assert code == 0
    saved = json.loads((dense_run.root / "supermask" / "seed_0_rewind.json").read_text())
    assert [r["criterion"] for r in saved] == ["dense", "threshold", "random_mask"]
