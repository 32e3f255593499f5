"""The deep-network half through the whole pipeline, at toy size: a batch-norm ResNet with
late rewinding, global pruning that leaves shortcuts and the output dense, augmentation,
one-shot with a non-default criterion, every variant, and a report."""

from __future__ import annotations

import json

import torch

from tests.conftest import tiny_config
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.experiments.variants import control_names
from ticketlab.pruning import Mask
from ticketlab.report.build import build_report
from ticketlab.report.runs import load_runs


def test_resnet_one_shot_with_every_variant_and_a_report(runtime, tmp_path):
    config = tiny_config(
        model="cifar_resnet_8_2", init="kaiming_normal", optimizer="sgd", lr=0.05,
        momentum=0.9, weight_decay=1e-4, norm_bias_weight_decay=0.0, batch_size=32,
        train="30it", eval_every="10it", rewind="5it", warmup="5it", schedule="step",
        milestones=("20it",), augment="crop_flip", scope="global", rate=0.2,
        exclude=("output", "shortcut"), one_shot=(0.5, 0.2), criterion="magnitude_increase",
        controls=tuple(control_names()))
    summary = run_imp(config, runtime)
    store = RunStore.open(runtime.out / summary["run"])
    records = summary["records"]
    assert len(records) == 1 + 2 * (1 + len(control_names()))
    assert all(r["early_stop_test_accuracy"] is not None for r in records)
    for level, density in ((1, 0.5), (2, 0.2)):
        mask = store.load_mask(Unit(0, level, "ticket"))
        kept = {g: [] for g in ("conv", "shortcut", "output")}
        for name, m in mask.items():
            kept[mask.groups[name]].append(m)
        assert all(bool(m.all()) for g in ("shortcut", "output") for m in kept[g])
        # one ranking over the convs cuts the whole mask (dense groups included) to density
        assert abs(mask.density() - density) < 1e-3
        conv = torch.cat([m.reshape(-1) for m in kept["conv"]]).float().mean().item()
        assert conv < density - 0.01  # the convs carry the cut alone
        assert not any("bn" in name or name.endswith("bias") for name in mask)
        final = store.load_weights(Unit(0, level, "ticket"), "final")
        for name, m in mask.items():  # pruned weights exactly zero after training
            assert bool((final[name][~m] == 0).all()), name
    config_json = json.loads((store.root / "config.json").read_text())
    assert config_json["units_trained"].startswith("one by one")
    paths = build_report(load_runs([store.root]), tmp_path / "report")
    assert any(str(p).endswith("report.html") for p in paths)
    assert isinstance(Mask.load(store.dir(Unit(0, 1, "random")) / "mask.safetensors"), Mask)
