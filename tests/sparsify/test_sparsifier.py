"""The in-loop Sparsifier: masks enforced under any optimizer, schedule followed, resumable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.training.synthetic import small_conv
from ticketlab.errors import TicketlabError
from ticketlab.sparsify import Sparsifier, sparsity_at

STEPS = 40


def mlp(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4))


def batches(n: int = STEPS, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g))
            for _ in range(n)]


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> None:
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


OPTIMIZERS = {
    "adam": (lambda p: torch.optim.Adam(p, lr=1e-2), "exp_avg"),
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
            "momentum_buffer"),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("make", [small_conv, mlp])
def test_pruned_weights_and_state_stay_zero(opt_name, make):
    model = make()
    build, key = OPTIMIZERS[opt_name]
    opt = build(model.parameters())
    sp = Sparsifier(model, opt, target=0.8, start=2, end=30, every=3)
    params = dict(model.named_parameters())
    pruned_seen = False
    for x, y in batches():
        train_step(model, opt, x, y)
        sp.step()
        for name, m in sp.mask.items():
            p = params[name]
            assert torch.all(p.detach()[~m] == 0)
            assert torch.all(opt.state[p][key][~m] == 0)
            pruned_seen |= bool((~m).any())
    assert pruned_seen and sp.sparsity() > 0.7


def test_sparsity_follows_agp_and_reaches_target_per_tensor():
    model, end = mlp(), 30
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = Sparsifier(model, opt, target=0.75, start=5, end=end)
    history = []
    for t, (x, y) in enumerate(batches(), start=1):
        train_step(model, opt, x, y)
        sp.step()
        history.append(sp.sparsity())
        for name, (kept, total) in sp.mask.counts().items():
            expected = sparsity_at(t, 0.75, "agp", 5, end)
            assert abs((total - kept) - expected * total) <= 1, (t, name)
    assert history == sorted(history)
    assert history[3] == 0.0 and history[-1] > 0.74


def test_filter_granularity_prunes_whole_filters_and_global_scope():
    model = small_conv()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = Sparsifier(model, opt, target=0.5, granularity="filter", start=0, end=10)
    for x, y in batches(12):
        train_step(model, opt, x, y)
        sp.step()
    for name, m in sp.mask.items():
        rows = m.reshape(m.shape[0], -1)
        assert torch.all(rows.all(1) | ~rows.any(1))  # each filter / neuron all kept or all gone
        dead = int((~rows.any(1)).sum())
        if sp.mask.groups[name] == "output":  # structured: the output layer keeps its classes
            assert dead == 0
            continue
        assert dead == m.shape[0] // 2
        assert int((~m).sum()) == dead * rows.shape[1]
        assert torch.all(dict(model.named_parameters())[name].detach()[~m] == 0)

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = Sparsifier(model, opt, target=0.6, scope="global", start=0, end=10)
    for x, y in batches(12):
        train_step(model, opt, x, y)
        sp.step()
    kept, total = map(sum, zip(*sp.mask.counts().values(), strict=True))
    assert abs((total - kept) - 0.6 * total) <= 1
    per_tensor = [1 - d for d in sp.mask.density_by_tensor().values()]
    assert per_tensor[0] != per_tensor[1]  # one ranking, not the same fraction per layer


def run(steps: int, attach: bool = False, stop_after: int | None = None):
    model = small_conv()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sp = Sparsifier(model, opt, target=0.7, start=3, end=25, every=2)
    handle = sp.attach() if attach else None
    for t, (x, y) in enumerate(batches(steps), start=1):
        train_step(model, opt, x, y)
        if not attach:
            sp.step()
        if handle is not None and t == stop_after:
            handle.remove()
    return model, sp


def test_attach_matches_manual_steps_and_remove_stops_it():
    manual, sp_manual = run(STEPS)
    hooked, sp_hooked = run(STEPS, attach=True)
    for a, b in zip(manual.state_dict().values(), hooked.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert sp_manual.mask == sp_hooked.mask and sp_hooked.steps == STEPS
    _, stopped = run(STEPS, attach=True, stop_after=10)
    assert stopped.steps == 10 and stopped.sparsity() < sp_hooked.sparsity()


def test_state_dict_resume_is_bit_exact():
    data = batches()
    full = small_conv()
    opt = torch.optim.Adam(full.parameters(), lr=1e-2)
    sp = Sparsifier(full, opt, target=0.7, criterion="magnitude_increase", start=3, end=35)
    for x, y in data:
        train_step(full, opt, x, y)
        sp.step()

    first = small_conv()
    opt1 = torch.optim.Adam(first.parameters(), lr=1e-2)
    sp1 = Sparsifier(first, opt1, target=0.7, criterion="magnitude_increase", start=3, end=35)
    for x, y in data[:20]:
        train_step(first, opt1, x, y)
        sp1.step()
    saved = ({k: v.clone() for k, v in first.state_dict().items()},
             opt1.state_dict(), sp1.state_dict())

    resumed = small_conv(seed=7)  # other weights: the init must come from the saved state
    resumed.load_state_dict(saved[0])
    opt2 = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    opt2.load_state_dict(saved[1])
    sp2 = Sparsifier(resumed, opt2, target=0.7, criterion="magnitude_increase", start=3, end=35)
    sp2.load_state_dict(saved[2])
    for x, y in data[20:]:
        train_step(resumed, opt2, x, y)
        sp2.step()
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert sp.mask == sp2.mask and sp2.steps == STEPS


def test_dsd_lifts_the_mask_at_its_end():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = Sparsifier(model, opt, target=0.5, schedule="dsd", start=0, end=20)
    peak = 0.0
    for x, y in batches(25):
        train_step(model, opt, x, y)
        sp.step()
        peak = max(peak, sp.sparsity())
    assert peak > 0.45 and sp.sparsity() == 0.0


@pytest.mark.parametrize("kwargs", [
    {"target": 1.5}, {"target": -0.1}, {"granularity": "block"}, {"criterion": "nope"},
    {"schedule": "nope"}, {"scope": "everywhere"}, {"every": 0}, {"end": 0, "start": 5},
    {"targets": {"nope": 0.5}}, {"targets": {"1.weight": 2.0}},
])
def test_bad_input_is_one_line_error(kwargs):
    args = {"target": 0.5, "end": 10, **kwargs}
    with pytest.raises(TicketlabError) as e:
        Sparsifier(mlp(), None, **args)
    assert "\n" not in str(e.value)


def test_attach_needs_the_optimizer_and_state_must_fit():
    sp = Sparsifier(mlp(), None, target=0.5, end=10)
    with pytest.raises(TicketlabError):
        sp.attach()
    with pytest.raises(TicketlabError):
        sp.load_state_dict(Sparsifier(small_conv(), None, target=0.5, end=10).state_dict())


def _rewind_run(steps: int, **kwargs):
    model = small_conv(batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = Sparsifier(model, opt, target=0.6, schedule="iterative", start=5, end=20, total=steps,
                    **kwargs)
    return model, opt, sp


def test_lth_rewinds_weights_batch_norm_and_optimizer_after_each_prune():
    model, opt, sp = _rewind_run(30, lth=True, rewind=3)
    saved = {}
    prunes = 0
    for t, (x, y) in enumerate(batches(30), start=1):
        train_step(model, opt, x, y)
        before = sp.sparsity()
        sp.step()
        if t == 3:
            saved = {k: v.clone() for k, v in model.state_dict().items()}
        if sp.sparsity() > before:  # pruned just now: the whole state is the rewind point's
            prunes += 1
            state = model.state_dict()
            for k, v in saved.items():
                expected = v * sp.mask[k] if k in sp.mask else v
                assert torch.equal(state[k], expected), k
            assert not opt.state  # fresh, as each IMP level's optimizer
    assert prunes == 3  # iterative, n=3
    assert any("running_mean" in k for k in saved)  # batch norm was rewound, not re-drawn


def test_lth_can_keep_the_momentum_as_fasterai_does():
    model, opt, sp = _rewind_run(20, lth=True, reset_optimizer=False)
    for x, y in batches(12):
        train_step(model, opt, x, y)
        sp.step()
    assert sp.sparsity() > 0 and opt.state  # pruned at step 5, momentum kept


def test_reset_end_leaves_the_final_mask_on_the_rewind_point():
    model, opt, sp = _rewind_run(25, reset_end=True, rewind=2)
    for t, (x, y) in enumerate(batches(25), start=1):
        train_step(model, opt, x, y)
        sp.step()
        if t == 2:
            saved = {k: v.clone() for k, v in model.state_dict().items()}
        assert sp.finished == (t == 25)
    state = model.state_dict()
    for k, v in saved.items():
        assert torch.equal(state[k], v * sp.mask[k] if k in sp.mask else v), k
    assert abs(sp.sparsity() - 0.6) < 0.05
    sp.step()  # finished: no more counting or pruning
    assert sp.steps == 25


def test_lth_resume_is_bit_exact():
    data = batches(30)
    model, opt, sp = _rewind_run(30, lth=True, rewind=3, reset_end=True)
    for x, y in data:
        train_step(model, opt, x, y)
        sp.step()
    model2, opt2, sp2 = _rewind_run(30, lth=True, rewind=3, reset_end=True)
    for x, y in data[:12]:
        train_step(model2, opt2, x, y)
        sp2.step()
    saved = (model2.state_dict(), opt2.state_dict(), sp2.state_dict())
    model3, opt3, sp3 = _rewind_run(30, lth=True, rewind=3, reset_end=True)
    model3.load_state_dict(saved[0])
    opt3.load_state_dict(saved[1])
    sp3.load_state_dict(saved[2])
    for x, y in data[12:]:
        train_step(model3, opt3, x, y)
        sp3.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, model3.state_dict()[k]), k


@pytest.mark.parametrize("kwargs, says", [
    ({"lth": True, "rewind": 8}, "rewind to the start or earlier"),
    ({"end": None, "total": None}, "needs an end"),
    ({"end": 40, "total": 30}, "within total"),
])
def test_rewinding_bad_input(kwargs, says):
    args = {"target": 0.5, "start": 5, "end": 20, **kwargs}
    with pytest.raises(TicketlabError, match=says):
        Sparsifier(small_conv(), None, **args)


def test_global_weight_pruning_of_a_channels_last_model():
    """The engine trains convs in channels-last layout; Mask.dense of such a model made
    channels-last masks, and global pruning's flat views of them failed."""
    from ticketlab.models.base import to_fast_layout

    model = to_fast_layout(small_conv())
    assert not model[0].weight.is_contiguous()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sp = Sparsifier(model, opt, target=0.5, scope="global", start=1, end=4)
    for x, y in batches(6):
        train_step(model, opt, x, y)
        sp.step()
    assert abs(sp.sparsity() - 0.5) < 0.01
