"""The Lightning callback: same engine as the Sparsifier, counted per optimizer step, resumable."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from ticketlab.errors import TicketlabError  # noqa: E402
from ticketlab.integrations.lightning import SparsifyCallback  # noqa: E402
from ticketlab.sparsify import Sparsifier, sparsity_at  # noqa: E402

BATCHES, BATCH = 10, 8

OPTIMIZERS = {
    "adam": (lambda p: torch.optim.Adam(p, lr=1e-2), ("exp_avg", "exp_avg_sq")),
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
            ("momentum_buffer",)),
}


def mlp(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                             nn.Linear(16, 3))


class Tiny(pl.LightningModule):
    def __init__(self, opt: str = "sgd", seed: int = 0):
        super().__init__()
        self.net, self.opt = mlp(seed), opt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return OPTIMIZERS[self.opt][0](self.parameters())


def data(n: int = BATCHES * BATCH) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)


def trainer(*callbacks: pl.Callback, epochs: int = 3, **kwargs) -> pl.Trainer:
    base = {"max_epochs": epochs, "accelerator": "cpu", "devices": 1, "logger": False,
            "enable_progress_bar": False, "enable_checkpointing": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0}
    return pl.Trainer(callbacks=list(callbacks), **{**base, **kwargs})


def fit(tr: pl.Trainer, model: pl.LightningModule, **kwargs) -> None:
    with warnings.catch_warnings():  # Lightning's advice on num_workers and log intervals
        warnings.simplefilter("ignore")
        tr.fit(model, data(), **kwargs)


class Watch(pl.Callback):
    """Runs `check(trainer, module)` after every batch, after the SparsifyCallback's turn."""

    def __init__(self, check):
        self.check, self.calls = check, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.check(trainer, pl_module)
        self.calls += 1


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_pruned_weights_and_optimizer_state_stay_zero(opt):
    cb = SparsifyCallback(target=0.8, start=2, end="2ep", every=3)
    keys = OPTIMIZERS[opt][1]
    pruned_seen = []

    def check(tr, module):
        params, state = dict(module.named_parameters()), tr.optimizers[0].state
        for name, m in cb.sparsifier.mask.items():
            p = params[name]
            assert torch.all(p.detach()[~m] == 0), name
            for key in keys:
                assert torch.all(state[p][key][~m] == 0), (name, key)
        pruned_seen.append(cb.sparsifier.sparsity())

    watch = Watch(check)
    fit(trainer(cb, watch), Tiny(opt))
    assert watch.calls == 3 * BATCHES
    assert pruned_seen[-1] > 0.75 and pruned_seen[0] == 0.0


def test_sparsity_follows_the_schedule_and_is_logged():
    target, start, end = 0.75, 3, "2ep"  # 2 epochs of 10 optimizer steps
    cb = SparsifyCallback(target=target, start=start, end=end, schedule="agp")

    def check(tr, module):
        t = tr.global_step
        assert cb.sparsifier.steps == t
        for name, (kept, total) in cb.sparsifier.mask.counts().items():
            expected = sparsity_at(t, target, "agp", start, end, iterations_per_epoch=BATCHES)
            assert abs((total - kept) - expected * total) <= 1, (t, name)
        assert tr.callback_metrics["sparsity"].item() == pytest.approx(cb.sparsifier.sparsity())

    watch = Watch(check)
    tr = trainer(cb, watch)
    fit(tr, Tiny())
    assert watch.calls == 3 * BATCHES and cb.sparsifier.end == 2 * BATCHES
    assert cb.sparsifier.sparsity() == pytest.approx(target, abs=0.02)
    assert tr.callback_metrics["sparsity_epoch"].item() == pytest.approx(cb.sparsifier.sparsity())


def test_end_defaults_to_the_last_optimizer_step():
    cb = SparsifyCallback(target=0.5, schedule="lin")
    fit(trainer(cb, epochs=2), Tiny())
    assert cb.sparsifier.end == 2 * BATCHES
    assert cb.sparsifier.sparsity() == pytest.approx(0.5, abs=0.02)


def test_gradient_accumulation_counts_optimizer_steps():
    # 10 batches, 3 per step: steps after batches 3, 6, 9 and the epoch's last (10).
    cb = SparsifyCallback(target=0.6, start=1, end="2ep", schedule="lin")
    seen: list[tuple[int, int]] = []
    watch = Watch(lambda tr, m: seen.append((tr.global_step, cb.sparsifier.steps)))
    fit(trainer(cb, watch, epochs=3, accumulate_grad_batches=3), Tiny())
    per_epoch = math.ceil(BATCHES / 3)
    assert cb.sparsifier.end == 2 * per_epoch
    assert cb.sparsifier.steps == 3 * per_epoch
    assert all(g == s for g, s in seen)
    assert [s for _, s in seen[:BATCHES]] == [0, 0, 1, 1, 1, 2, 2, 2, 3, 4]
    for name, (kept, total) in cb.sparsifier.mask.counts().items():
        assert abs((total - kept) - 0.6 * total) <= 1, name


@pytest.mark.parametrize("same_callback", [False, True])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, same_callback):
    made: list[SparsifyCallback] = []

    def run(epochs: int, ckpt_path=None, save: bool = False) -> tuple[Tiny, SparsifyCallback]:
        if same_callback and made:
            cb = made[0]  # a second fit with the callback of the first
        else:
            cb = SparsifyCallback(target=0.8, start=3, end="3ep", every=2, schedule="agp")
        made.append(cb)
        extra = []
        if save:
            extra = [pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1,
                                                  every_n_epochs=1,
                                                  filename="{epoch}")]
        tr = trainer(cb, *extra, epochs=epochs, enable_checkpointing=save)
        model = Tiny("adam")
        fit(tr, model, ckpt_path=ckpt_path)
        return model, cb

    whole, cb_whole = run(4, save=True)
    mask_whole, steps_whole = cb_whole.sparsifier.mask, cb_whole.sparsifier.steps
    mid = tmp_path / "epoch=1.ckpt"  # after 2 of 4 epochs, mid-schedule
    assert mid.is_file()
    assert 0 < torch.load(mid, weights_only=False)["callbacks"]["SparsifyCallback"]["step"] < 30
    resumed, cb_resumed = run(4, ckpt_path=mid)
    assert cb_resumed.sparsifier.steps == steps_whole == 4 * BATCHES
    assert cb_resumed.sparsifier.mask == mask_whole and mask_whole.density() < 0.3
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_same_mask_and_weights_as_the_sparsifier_by_hand():
    kwargs = {"target": 0.7, "start": 2, "end": 25, "every": 2, "schedule": "cos",
              "granularity": "row"}
    cb = SparsifyCallback(**kwargs)
    module = Tiny("sgd")
    fit(trainer(cb, epochs=3), module)

    model = mlp()  # the same initial weights, named as Tiny's net is
    wrapped = nn.Module()
    wrapped.net = model
    opt = OPTIMIZERS["sgd"][0](wrapped.parameters())
    sp = Sparsifier(wrapped, opt, iterations_per_epoch=BATCHES, **kwargs)
    for _ in range(3):
        for x, y in data():
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sp.step()
    assert sp.mask == cb.sparsifier.mask and sp.sparsity() > 0.6
    for name, p in wrapped.state_dict().items():
        assert torch.equal(p, module.state_dict()[name]), name


def test_finish_is_called_at_the_end_if_the_sparsifier_has_it(monkeypatch):
    calls = []
    monkeypatch.setattr(Sparsifier, "finish", lambda self: calls.append(self.steps),
                        raising=False)
    fit(trainer(SparsifyCallback(target=0.5, end=5), epochs=1), Tiny())
    assert calls == [BATCHES]


def test_bad_setups_are_one_line_errors():
    with pytest.raises(TicketlabError, match="granularity"):
        fit(trainer(SparsifyCallback(target=0.5, granularity="slab"), epochs=1), Tiny())
    with pytest.raises(TicketlabError, match="max_epochs or max_steps"):
        fit(trainer(SparsifyCallback(target=0.5), epochs=-1, max_steps=-1,
                        max_time="00:00:00:10"), Tiny())


def test_without_lightning_the_import_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "ticketlab.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install ticketlab\[lightning\]") as err:
        import ticketlab.integrations.lightning  # noqa: F401
    assert isinstance(err.value, TicketlabError)


def test_the_core_never_imports_lightning():
    code = ("import sys, ticketlab, ticketlab.sparsify, ticketlab.pruning; "
            "ticketlab.Sparsifier; print(sorted(m for m in sys.modules if 'lightning' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
