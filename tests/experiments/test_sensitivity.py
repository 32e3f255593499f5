import copy
import json

import pytest
import torch

from tests.conftest import tiny_config
from tests.test_cli import cli
from tests.training.synthetic import same_state, small_conv, state, synthetic
from ticketlab.config import Runtime
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.sensitivity import analyze_run, cut_layer, sensitivity
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.pruning import Mask, magnitude_scores
from ticketlab.supermask import evaluate_supermask


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    config = tiny_config(levels=2, train="100it", controls=())
    run_imp(config, Runtime(out=out, device="cpu", quiet=True))
    return RunStore(out / config.run_name())


def by_layer_target(result):
    return {(r["layer"], r["target"]): r for r in result["records"]}


def layer_mask(store, record, unit):
    """The mask a record was measured under, rebuilt independently of `sensitivity`."""
    mask = store.load_mask(unit)
    final = store.load_weights(unit, "final")
    scores = magnitude_scores(final, mask)
    cut = cut_layer(mask, scores[record["layer"]], record["layer"], record["target"])
    return mask, final, mask.with_tensors({**mask, record["layer"]: cut})


def test_each_layer_is_cut_alone_to_its_target_and_measured_there(run):
    result = analyze_run(run, sparsities=(0.0, 0.5, 0.9), device="cpu")
    unit = Unit(0, 0, "ticket")
    data = tiny_config().data.load(device="cpu")
    from ticketlab.models import build_model
    model = build_model("lenet_300_100", data.input_shape, data.num_classes)
    model.load_state_dict(run.load_weights(unit, "final"))
    assert len(result["records"]) == 3 * 3 and result["asked"]["split"] == "val"
    for r in result["records"]:
        mask, final, cut = layer_mask(run, r, unit)
        n = mask[r["layer"]].numel()
        # exactly that layer's density 1 - target (up to rounding to whole weights)...
        assert cut.density_by_tensor()[r["layer"]] == pytest.approx(1 - r["target"], abs=1 / n)
        assert r["sparsity"] == pytest.approx(r["target"], abs=1 / n)
        # ...every other layer untouched...
        assert all(torch.equal(cut[k], mask[k]) for k in mask if k != r["layer"])
        # ...the smallest trained weights of the layer went first...
        w = final[r["layer"]].abs()
        if r["target"] > 0:
            assert w[~cut[r["layer"]]].max() <= w[cut[r["layer"]]].min()
        # ...and the accuracy is that network's, on the validation split
        loss, acc = evaluate_supermask(model, cut, data.x_val, data.y_val, init=final)
        assert (r["loss"], r["accuracy"]) == pytest.approx((loss, acc), rel=1e-9)


def test_pruning_a_layer_to_zero_changes_nothing(run):
    result = analyze_run(run, sparsities=(0.0, 0.9), device="cpu")
    base = result["baseline"]
    assert base["sparsity"] == 0.0 and base["layer"] is None
    at = by_layer_target(result)
    for layer in ("fc1.weight", "fc2.weight", "fc3.weight"):
        assert at[layer, 0.0]["accuracy"] == base["accuracy"]
        assert at[layer, 0.0]["loss"] == base["loss"] and at[layer, 0.0]["sparsity"] == 0
    # and cutting does something: 90% of the output layer costs accuracy
    assert at["fc3.weight", 0.9]["loss"] > base["loss"]


def test_a_ticket_layer_is_cut_from_its_own_mask_and_never_unpruned(run):
    unit = Unit(0, 2, "ticket")
    mask = run.load_mask(unit)
    now = {k: 1 - d for k, d in mask.density_by_tensor().items()}
    result = analyze_run(run, level=2, sparsities=(0.1, 0.8), device="cpu")
    at = by_layer_target(result)
    assert result["unit"] == unit.relpath() and result["density"] == mask.density()
    for layer, sparsity in now.items():
        assert 0.1 < sparsity < 0.8  # two levels of 20% (10% for the output layer)
        below, above = at[layer, 0.1], at[layer, 0.8]
        assert below["sparsity"] == sparsity  # reported as the current one, not cut
        assert below["accuracy"] == result["baseline"]["accuracy"]
        assert above["sparsity"] == pytest.approx(0.8, abs=1 / mask[layer].numel())
        _, _, cut = layer_mask(run, above, unit)
        assert not (cut[layer] & ~mask[layer]).any()  # nothing the ticket pruned comes back


@pytest.mark.parametrize(("granularity", "dim"), [("filter", 1), ("row", 1), ("channel", 0),
                                                  ("column", 0)])
def test_structured_cuts_remove_whole_rows_or_columns(run, granularity, dim):
    for level in (0, 2):
        unit = Unit(0, level, "ticket")
        result = analyze_run(run, level=level, sparsities=(0.33, 0.9), granularity=granularity,
                             device="cpu")
        mask = run.load_mask(unit)
        final = run.load_weights(unit, "final")
        scores = magnitude_scores(final, mask)
        for r in result["records"]:
            layer = r["layer"]
            cut = cut_layer(mask, scores[layer], layer, r["target"], granularity)
            gone = ~cut.any(dim) & mask[layer].any(dim)  # groups this cut removed
            now = 1 - mask[layer].sum().item() / mask[layer].numel()
            assert bool(gone.any()) == (r["target"] > now)  # below: nothing to cut
            # a kept group is exactly as the mask had it; a removed one is gone whole
            kept = cut.any(dim)
            rows = (lambda t: t) if dim == 1 else (lambda t: t.T)
            assert torch.equal(rows(cut)[kept], rows(mask[layer])[kept])
            assert r["sparsity"] == 1 - cut.sum().item() / cut.numel()
            if level == 0:  # whole groups of equal size: the nearest count of groups
                groups = mask[layer].shape[1 - dim]
                assert int(gone.sum()) == pytest.approx(r["target"] * groups, abs=0.5)


def test_same_arguments_same_records(run):
    args = {"sparsities": (0.3, 0.7), "granularity": "filter", "criterion": "random",
            "device": "cpu"}
    a, b = analyze_run(run, **args), analyze_run(run, **args)
    assert a == b
    c = analyze_run(run, **{**args, "criterion": "large_final"})
    assert c["records"] != a["records"]


def test_conv_model_kernels_filters_and_batch_norm_left_unchanged():
    data = synthetic()
    model = small_conv(batch_norm=True)
    model[1].running_mean.fill_(0.3)  # eval-mode batch norm must use these, unchanged
    before = state(model)
    mask = Mask.dense(model)
    records = sensitivity(model, mask, data, (0.5,), granularity="kernel")
    assert [r["layer"] for r in records] == [None, "0.weight"]  # a Linear has no kernels
    records = sensitivity(model, mask, data, (0.5,), granularity="filter", split="test")
    assert [r["sparsity"] for r in records[1:]] == [0.5, 0.5] and records[1]["split"] == "test"
    assert same_state(before, state(model)) and model.training
    again = sensitivity(model, mask, data, (0.5,), granularity="filter", split="test")
    assert again == records
    # a cut filter takes its batch-norm channel with it (as in training): the record is the
    # accuracy of the model with those filters' weights and their BN gamma and beta zeroed
    from ticketlab.pruning import criterion_scores
    from ticketlab.training.evaluate import evaluate

    cut = copy.deepcopy(model).eval()
    final = {k: v.detach() for k, v in model.named_parameters() if k in mask}
    m = cut_layer(mask, criterion_scores("large_final", final, final, mask)["0.weight"],
                  "0.weight", 0.5, "filter", "mean")
    dead = ~m.reshape(4, -1).any(1)
    with torch.no_grad():
        cut[0].weight.mul_(m)
        cut[1].weight[dead] = 0
        cut[1].bias[dead] = 0
    loss, acc = evaluate(cut, data.x_test, data.y_test, 2000)
    assert (records[1]["loss"], records[1]["accuracy"]) == (loss, acc)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"sparsities": (1.0,)}, "fraction in [0, 1)"),
    ({"sparsities": (-0.1,)}, "fraction in [0, 1)"),
    ({"sparsities": ()}, "no sparsities"),
    ({"granularity": "block"}, "unknown granularity 'block'"),
    ({"criterion": "biggest"}, "unknown criterion 'biggest'"),
    ({"split": "train"}, "unknown split 'train'"),
    ({"reduce": "max"}, "unknown reduction 'max'"),
    ({"level": 5}, "level 5 of seed 0 (ticket) is not finished"),
    ({"seed": 3}, "seed 3 has no finished ticket unit"),
    ({"variant": "reinit"}, "no finished reinit unit"),
])
def test_bad_arguments_raise_one_line_errors(run, kwargs, needle):
    from ticketlab.errors import TicketlabError
    with pytest.raises(TicketlabError, match=None) as e:
        analyze_run(run, **{"device": "cpu", **kwargs})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_kernel_granularity_on_an_mlp_is_refused(run):
    from ticketlab.errors import TicketlabError
    with pytest.raises(TicketlabError, match="applies to no layer"):
        analyze_run(run, granularity="kernel", device="cpu")


def test_sensitivity_cli(run, tmp_path, capsys):
    code, out, _ = cli(capsys, "sensitivity", str(run.root), "--sparsities", "0.5,0.9",
                       "--level", "1", "--quiet", "--device", "cpu")
    assert code == 0 and "fc2.weight" in out and "validation accuracy" in out
    folder = run.root / "sensitivity" / "seed_0_level_01_ticket_weight_large_final_val"
    saved = json.loads((folder / "sensitivity.json").read_text())
    assert saved["level"] == 1 and saved["asked"]["sparsities"] == [0.5, 0.9]
    assert len(saved["records"]) == 6 and saved["baseline"]["layer"] is None
    assert (folder / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = cli(capsys, "sensitivity", str(run.root), "--sparsities", "0.5",
                       "--split", "test", "--granularity", "row", "--out",
                       str(tmp_path / "s"), "--quiet", "--device", "cpu")
    assert code == 0 and "TEST accuracy" in out
    assert json.loads((tmp_path / "s" / "sensitivity.json").read_text())["records"][0][
        "split"] == "test"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--level", "9"], "level 9 of seed 0 (ticket) is not finished"),
    (["--granularity", "block"], "invalid choice: 'block'"),
    (["--criterion", "biggest"], "unknown criterion 'biggest'"),
    (["--sparsities", "0.5,1"], "fraction in [0, 1), got 1.0"),
    (["--split", "train"], "invalid choice: 'train'"),
])
def test_sensitivity_cli_errors(run, capsys, argv, needle):
    code, _, err = cli(capsys, "sensitivity", str(run.root), "--quiet", "--device", "cpu",
                       *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_sensitivity_cli_missing_run(tmp_path, capsys):
    code, _, err = cli(capsys, "sensitivity", str(tmp_path / "nowhere"), "--quiet")
    assert code == 2 and "not a ticketlab run directory" in err
    assert len(err.strip().splitlines()) == 1
