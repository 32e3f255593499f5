"""Training throughput of ResNet-20 on 32x32 images: ticketlab vs PyTorch's eager loop vs FLOPs.

Measures, in one process, steps per second at batch 128 (3x32x32 random images, 10
classes, `cifar_resnet_20`, SGD lr 0.1, momentum 0.9, weight decay 1e-4 as OpenLTH's
`resnet20_cifar10`) of:

1. ticketlab: the real engine, `ticketlab.training.train`, on a synthetic `Dataset`. `train`
   evaluates at its start and end, so its rate is taken from two runs, k and k + n steps
   long: n / (T(k + n) - T(k)) leaves the evaluations out. Also with the model (and then
   also the images) in channels-last memory format, which the engine now uses for every
   model with 2-D convolutions, its input images converted as they come in
   (`models.base.to_fast_layout`): "ticketlab train()" is the default layout, "+
   channels-last images" is what `ticketlab find` runs.
2. PyTorch's default eager loop: `optimizer.zero_grad(); loss.backward(); optimizer.step()`
   with `torch.optim.SGD` at its default implementation; then the same loop with the
   project's optimizer (`build_optimizer`: fused SGD), with channels-last, and (with
   `--compile`) `torch.compile` of the model, whose compile time is printed apart.
3. The arithmetic roofline: FLOPs of one training step from the layer shapes (forward
   multiply-adds of every conv and linear layer at its output size, x2 for FLOPs, x3 for
   forward + backward) divided by the rate of a large float32 `torch.mm` timed in the same
   run.

It prints steps/s, the ratios (`N.Nx`) and the projected wall time of one `resnet20_cifar10`
level: 160 epochs of 45,000 images (5,000 held out) at batch 128 (56,160 steps) plus, per
epoch, evaluating the validation (5,000) and test (10,000) sets and at most the
10,000-image training subset, at the measured inference rate of `evaluate`.

Each measurement is the best of `--repeats` interleaved rounds. A ResNet-20 step takes about
half a second on one core, so the default is short and rough; use more steps for a report.
On a shared machine use `--threads 1` (see benchmarks/threads.py): with 2 threads beside
other work, OpenMP stalls made every variant 2-5x slower and their ranking random.

Run:
    python benchmarks/conv_throughput.py --threads 1   # about a minute on a 2-core CPU
    python benchmarks/conv_throughput.py --quick       # smoke test (batch 16, 1 step)
    python benchmarks/conv_throughput.py --threads 1 --steps 6 --repeats 2 --compile
Options: --steps N (3), --repeats R (1), --batch B (128), --threads T, --device D (cpu),
--compile (adds torch.compile; minutes of compilation on a CPU).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from train_throughput import busy_cpus, cpu_model  # type: ignore[import-not-found]

from ticketlab.config import TrainingHparams
from ticketlab.data.dataset import Dataset
from ticketlab.models.registry import build_model
from ticketlab.training import train
from ticketlab.training.evaluate import evaluate
from ticketlab.training.optimizers import build_optimizer

MODEL, SHAPE, CLASSES = "cifar_resnet_20", (3, 32, 32), 10
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4
LEVEL_STEPS = 160 * (45_000 // 128)  # 56,160: one resnet20_cifar10 level (5,000 held out)
EPOCHS, EVAL_IMAGES, TRAIN_SUBSET = 160, 5_000 + 10_000, 10_000
CHANNELS_LAST = torch.channels_last


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def synthetic(batch: int, batches: int, device: torch.device, channels_last: bool = False
              ) -> Dataset:
    """Random normalised images and labels; val and test one batch each (only evaluated)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * (batches + 2), *SHAPE, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=CHANNELS_LAST)
    y = torch.randint(0, CLASSES, (len(x),), generator=g).to(device)
    n = batch * batches
    return Dataset("synthetic", x[:n], y[:n], x[n:n + batch], y[n:n + batch],
                   x[n + batch:], y[n + batch:], CLASSES, SHAPE, (0.0,) * 3, (1.0,) * 3)


def training_flops(model: nn.Module) -> int:
    """FLOPs of one training step per image: 3 x 2 x the forward multiply-adds of every
    conv and linear layer at its output size (backward = input and weight gradients)."""
    macs = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * \
                module.kernel_size[1]
            macs += out[0].numel() * k
        else:
            macs += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *SHAPE, device=next(model.parameters()).device))
    model.train()
    for h in handles:
        h.remove()
    return 3 * 2 * macs


def matmul_rate(device: torch.device, n: int = 2048, repeats: int = 3) -> float:
    """float32 FLOP/s of an n x n x n `torch.mm` (best of `repeats`)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    return 2 * n ** 3 / min(timed(lambda: torch.mm(a, b), device) for _ in range(repeats))


# ---------------------------------------------------------------------------- the loops

def ticketlab_rate(model: nn.Module, data: Dataset, hp: TrainingHparams, k: int, n: int,
                   device: torch.device) -> float:
    """Steps/s of `train` between step k and k + n (its evaluations cancel out)."""
    state = {key: v.clone() for key, v in model.state_dict().items()}

    def run(end: int) -> float:
        model.load_state_dict(state)
        return timed(lambda: train(model, data, hp, seed=0, end=end, eval_every=end + 1),
                     device)

    return n / max(run(k + n) - run(k), 1e-9)


def eager_rate(model: nn.Module, data: Dataset, optimizer: torch.optim.Optimizer,
               steps: int, device: torch.device, forward: Callable[[Tensor], Tensor] | None
               = None) -> float:
    """Steps/s of the textbook loop over the synthetic training batches."""
    forward = model if forward is None else forward
    batch = len(data.y_val)
    batches = data.n_train // batch
    model.train()

    def loop() -> None:
        for s in range(steps):
            i = (s % batches) * batch
            x, y = data.x_train[i:i + batch], data.y_train[i:i + batch]
            optimizer.zero_grad()
            loss = F.cross_entropy(forward(x), y)
            loss.backward()
            optimizer.step()

    return steps / timed(loop, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement (3)")
    p.add_argument("--repeats", type=int, default=1, help="rounds; the best counts (1)")
    p.add_argument("--batch", type=int, default=128, help="batch size (128)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 16, 1 step")
    args = p.parse_args()
    if args.quick:
        args.steps, args.repeats, args.batch = 1, 1, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    busy = busy_cpus() if device.type == "cpu" else None
    B, warm = args.batch, 1
    hp = TrainingHparams(optimizer="sgd", lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                         batch_size=B)
    data = synthetic(B, 4, device)
    data_cl = synthetic(B, 4, device, channels_last=True)

    def model(channels_last: bool = False) -> nn.Module:
        m = build_model(MODEL, SHAPE, CLASSES, "kaiming_normal", seed=0).to(device)
        return m.to(memory_format=CHANNELS_LAST) if channels_last else m

    def sgd_default(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM,
                               weight_decay=WEIGHT_DECAY)

    m_tl, m_tlcl, m_tlcl2 = model(), model(True), model(True)
    m_def, m_fused, m_cl = model(), model(), model(True)
    o_def, o_fused, o_cl = (sgd_default(m_def), build_optimizer(m_fused.parameters(), hp),
                            build_optimizer(m_cl.parameters(), hp))
    steps = args.steps
    benches: dict[str, Callable[[], float]] = {
        "ticketlab train()": lambda: ticketlab_rate(m_tl, data, hp, warm, steps, device),
        "  + channels-last model": lambda: ticketlab_rate(m_tlcl, data, hp, warm, steps,
                                                          device),
        "  + channels-last images": lambda: ticketlab_rate(m_tlcl2, data_cl, hp, warm, steps,
                                                           device),
        "eager, default SGD": lambda: eager_rate(m_def, data, o_def, steps, device),
        "eager, fused SGD": lambda: eager_rate(m_fused, data, o_fused, steps, device),
        "eager, fused, channels-last": lambda: eager_rate(m_cl, data_cl, o_cl, steps, device),
    }
    compile_s = None
    if args.compile:
        m_c = model(True)
        o_c = build_optimizer(m_c.parameters(), hp)
        compiled = torch.compile(m_c)
        compile_s = timed(lambda: eager_rate(m_c, data_cl, o_c, 1, device, compiled), device)
        benches["eager, fused, channels-last, compiled"] = lambda: eager_rate(
            m_c, data_cl, o_c, steps, device, compiled)

    for name, fn in benches.items():  # warm-up: first kernels, oneDNN primitives
        if name.startswith("eager"):
            fn()
    best: dict[str, float] = dict.fromkeys(benches, 0.0)
    for _ in range(args.repeats):  # interleaved, so slow phases of a busy machine hit all
        for name, fn in benches.items():
            best[name] = max(best[name], fn())

    flops = training_flops(model()) * B
    mm = matmul_rate(device)
    roof = mm / flops
    eval_model = model()
    n_eval = 4 * B
    eval_rate = n_eval / min(timed(lambda: evaluate(eval_model, data.x_train, data.y_train,
                                                    batch_size=2000), device)
                             for _ in range(2))

    others = "unknown" if busy is None else f"{busy:.1f}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"CPU: {cpu_model()} ({others} CPUs busy with other work at start)")
    print(f"{MODEL}, batch {B}, {'x'.join(map(str, SHAPE))} random images, SGD lr {LR} "
          f"momentum {MOMENTUM} wd {WEIGHT_DECAY}; best of {args.repeats} x {steps} steps")
    print(f"roofline: {flops / 1e9:.1f} GFLOP/step (conv+linear, fwd+bwd) at "
          f"{mm / 1e9:.0f} GFLOP/s (float32 mm 2048^3) = {roof:.2f} steps/s")
    if compile_s is not None:
        print(f"torch.compile: first step (compilation) {compile_s:.0f} s")
    print()
    print(f"{'':<40}{'steps/s':>9}{'s/step':>9}{'vs default':>11}{'vs roofline':>12}")
    base = best["eager, default SGD"]
    for name, rate in {**best, "matmul roofline": roof}.items():
        print(f"{name:<40}{rate:>9.2f}{1 / rate:>9.2f}{rate / base:>10.1f}x"
              f"{rate / roof:>11.2f}x")
    print()
    evals = EPOCHS * (EVAL_IMAGES + TRAIN_SUBSET) / eval_rate
    print(f"inference (ticketlab evaluate): {eval_rate:.0f} images/s")
    print(f"one resnet20_cifar10 level ({LEVEL_STEPS:,} steps + {EPOCHS} evaluations of "
          f"{EVAL_IMAGES + TRAIN_SUBSET:,} images, {evals / 3600:.1f} h of them), projected:")
    for name in ("ticketlab train()", "  + channels-last model", "  + channels-last images",
                 "eager, fused, channels-last", "matmul roofline"):
        rate = roof if name == "matmul roofline" else best[name]
        hours = (LEVEL_STEPS / rate + evals) / 3600
        print(f"  {name.strip():<38}{hours:>7.1f} h")
    if B != 128:
        print("(batch is not 128: the projection assumes the measured rate per step)")
    print(f"(total wall time {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
