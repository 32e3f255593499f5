"""Batch norm in IMP: the rewind point carries the running statistics the dense training
reached, the ticket starts from them, the reinit control from a fresh network's; batch norm
is never pruned; trained together (vectorised), each unit keeps its own running statistics
and ends where it ends trained alone."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config
from ticketlab.config import Runtime
from ticketlab.experiments import imp
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import build_model, prunable_groups

REWIND = 5


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    """cifar_resnet_8_2 (depth 6*1+2, width 2: 8x8 digits fit) rewound to step 5, one level,
    the reinit control; the state each unit's training was handed is recorded."""
    config = tiny_config(model="cifar_resnet_8_2", rewind=f"{REWIND}it", levels=1,
                         controls=("reinit",), train="20it", eval_every="10it")
    runtime = Runtime(out=tmp_path_factory.mktemp("bn") / "runs", device="cpu", quiet=True,
                      vectorize=False)
    handed: list[dict[str, torch.Tensor]] = []
    real = imp.train

    def spy(model, *args, **kwargs):
        handed.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(imp, "train", spy)
        run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    # one by one, in order: level 0, then level 1's ticket and reinit
    return config, store, dict(zip(("dense", "ticket", "reinit"), handed, strict=True))


def bn_layers(config) -> list[str]:
    model = build_model(config.model.model, (1, 8, 8), 10)
    return [k for k, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]


def bn_buffers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in
            ("running_mean", "running_var", "num_batches_tracked")}


def test_rewind_point_holds_the_trained_running_statistics(bn_run):
    config, store, _ = bn_run
    fresh = build_model(config.model.model, (1, 8, 8), 10).state_dict()
    rewind = store.load_weights(Unit(0, 0, "ticket"), "rewind")
    buffers = bn_buffers(rewind)
    assert len(buffers) == 3 * len([k for k in fresh if k.endswith("running_mean")]) > 0
    for k, v in buffers.items():
        if k.endswith("num_batches_tracked"):
            assert v.item() == REWIND, k  # taken after exactly 5 training steps
        else:
            assert not torch.equal(v, fresh[k]), k  # training moved them
    init = store.load_weights(Unit(0, 0, "ticket"), "init")
    assert all(torch.equal(v, fresh[k]) for k, v in bn_buffers(init).items())


def test_ticket_starts_from_the_rewind_point_statistics(bn_run):
    config, store, handed = bn_run
    rewind = store.load_weights(Unit(0, 0, "ticket"), "rewind")
    saved = store.load_weights(Unit(0, 1, "ticket"), "rewind")
    for k, v in bn_buffers(rewind).items():
        assert torch.equal(saved[k], v), k
        assert torch.equal(handed["ticket"][k], v), k  # what training was handed
    for layer in bn_layers(config):  # weights and biases too: unpruned, at the rewind point
        for k in (f"{layer}.weight", f"{layer}.bias"):
            assert torch.equal(handed["ticket"][k], rewind[k]), k


def test_reinit_starts_from_a_fresh_networks_batch_norm(bn_run):
    config, store, handed = bn_run
    for state in (handed["reinit"], store.load_weights(Unit(0, 1, "reinit"), "rewind")):
        buffers = bn_buffers(state)
        assert buffers
        for k, v in buffers.items():
            expected = {"running_mean": 0, "running_var": 1, "num_batches_tracked": 0}[
                k.rsplit(".", 1)[-1]]
            assert torch.all(v == expected), k
        for layer in bn_layers(config):
            assert torch.all(state[f"{layer}.weight"] == 1), layer
            assert torch.all(state[f"{layer}.bias"] == 0), layer


def test_batch_norm_is_never_in_the_mask(bn_run):
    config, store, _ = bn_run
    model = build_model(config.model.model, (1, 8, 8), 10)
    layers = bn_layers(config)
    assert len(layers) == 1 + 2 * 3 + 2  # stem, two in each of 3 blocks, two 1x1 shortcuts
    for unit in (Unit(0, 0, "ticket"), Unit(0, 1, "ticket"), Unit(0, 1, "reinit")):
        mask = store.load_mask(unit)
        assert set(mask) == set(prunable_groups(model)), unit
        assert not any(k.startswith(f"{layer}.") for k in mask for layer in layers), unit
    assert store.load_mask(Unit(0, 1, "ticket")).density() < 1  # level 1 did prune


def test_units_train_one_by_one_and_config_json_says_why(bn_run):
    _, store, _ = bn_run
    assert store.config()["units_trained"] == "one by one: --no-vectorize"


def test_trained_together_each_unit_ends_where_it_ends_alone(bn_run, tmp_path):
    """Vectorised, a level's units share one pass but not their running statistics: each
    ends within rounding of its one-by-one run (relative to how far training moved it;
    tests/training/test_replicates.py explains the tolerance), batch-norm buffers included."""
    config, alone, _ = bn_run
    runtime = Runtime(out=tmp_path / "runs", device="cpu", quiet=True, vectorize=True)
    run_imp(config, runtime)
    together = RunStore(runtime.out / config.run_name())
    assert together.config()["units_trained"] == "together (vectorised)"
    for unit in (Unit(0, 1, "ticket"), Unit(0, 1, "reinit")):
        start = together.load_weights(unit, "rewind")
        a, b = alone.load_weights(unit, "final"), together.load_weights(unit, "final")
        for k in a:
            if not a[k].is_floating_point():
                assert torch.equal(a[k], b[k]), (unit, k)
                continue
            moved = (a[k] - start[k]).norm()
            if moved > 0:
                assert (a[k] - b[k]).norm() / moved < 1e-2, (unit, k)
