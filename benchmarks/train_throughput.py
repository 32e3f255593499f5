"""Training throughput of LeNet-300-100 on MNIST: ticketlab vs a DataLoader pipeline vs GEMMs.

Measures, in one process with one thread count, steps per second at batch 60 with Adam
(lr 1.2e-3) of:

1. ticketlab: the real engine, `ticketlab.training.train`, unmasked and with a magnitude
   mask at 20% density (`prune_magnitude`, passed as `mask=`). `train` always evaluates at
   its start and end, so the validation and test sets are cut to 60 images here to keep
   evaluation out of the timing; `eval_every` is larger than the step count.
2. The conventional per-sample pipeline of the seed notebooks, without torchvision: a
   `torch.utils.data.Dataset` that does per item what `torchvision.datasets.MNIST` with
   ToTensor and Normalize((0.1307,), (0.3081,)) does (uint8 tensor -> PIL image -> float
   CHW tensor -> normalised copy), a
   `DataLoader(batch_size=60, shuffle=True, num_workers=0)`, default `torch.optim.Adam` and
   a standard loop (zero_grad, forward, cross_entropy, backward, step).
3. A matmul roofline: only the 8 GEMMs of one training step (3 forward, 3 weight-gradient,
   2 input-gradient) on preallocated tensors.

Each measurement is the best of `--repeats` (5) interleaved rounds of a fixed number of
steps (500; a third of that for the slow DataLoader), so that a noisy machine still gives
stable ratios.

Run:
    python benchmarks/train_throughput.py            # ~15 s on an idle 2-core machine
    python benchmarks/train_throughput.py --quick    # smoke test, a few seconds
Options: --steps N (ticketlab and roofline; the DataLoader gets a third), --repeats R,
--threads T, --data-dir DIR (default: $TICKETLAB_DATA, else ../shared/data from the repo).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ticketlab.config import TrainingHparams
from ticketlab.data import Dataset, load_dataset, load_raw
from ticketlab.models.registry import build_model
from ticketlab.pruning import Mask, prune_magnitude
from ticketlab.training import train

BATCH = 60
LR = 1.2e-3
MEAN, STD = (0.1307,), (0.3081,)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ---------------------------------------------------------------------------- helpers

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def busy_cpus(window: float = 0.5) -> float | None:
    """CPUs kept busy by other processes over `window` seconds (from /proc/stat), if known."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields[:8]), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 == total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fresh_model(state: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model("lenet_300_100", (1, 28, 28), 10)
    model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------------- ticketlab

def ticketlab_run(data: Dataset, state: dict[str, torch.Tensor], steps: int,
                  mask: Mask | None) -> float:
    """Seconds for `train` to take `steps` steps from a fresh copy of the initial weights."""
    model = fresh_model(state)
    hp = TrainingHparams(optimizer="adam", lr=LR, batch_size=BATCH)
    return timed(lambda: train(model, data, hp, seed=0, end=steps, eval_every=steps + 1,
                               mask=mask))


# ---------------------------------------------------------------------------- DataLoader

class PerSampleMNIST(torch.utils.data.Dataset):
    """What `torchvision.datasets.MNIST` + `Compose([ToTensor(), Normalize(...)])` do per
    sample, re-stated without torchvision (not installable here): a uint8 tensor indexed per
    item, turned into a PIL image, converted back to a float CHW tensor in [0, 1] (ToTensor)
    and normalised out of place (Normalize)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.data = torch.from_numpy(images.reshape(-1, 28, 28))  # as torchvision stores it
        self.targets = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[i], int(self.targets[i])
        pic = Image.fromarray(img.numpy(), mode="L")
        # ToTensor (to_tensor on a PIL image)
        t = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        t = t.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
        t = t.to(dtype=torch.get_default_dtype()).div(255)
        # Normalize (normalize with inplace=False)
        t = t.clone()
        mean = torch.as_tensor(MEAN, dtype=t.dtype, device=t.device)
        std = torch.as_tensor(STD, dtype=t.dtype, device=t.device)
        if (std == 0).any():
            raise ValueError("std evaluated to zero")
        t.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
        return t, target


def dataloader_run(loader: DataLoader, state: dict[str, torch.Tensor], steps: int) -> float:
    model = fresh_model(state)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def loop() -> None:
        done = 0
        while done < steps:
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                done += 1
                if done == steps:
                    break

    return timed(loop)


# ---------------------------------------------------------------------------- roofline

class Gemms:
    """The GEMMs of one LeNet-300-100 training step at batch 60, on preallocated tensors."""

    def __init__(self) -> None:
        def r(*shape: int) -> torch.Tensor:
            return torch.randn(*shape) * 0.05

        self.x, self.w1, self.w2, self.w3 = r(BATCH, 784), r(300, 784), r(100, 300), r(10, 100)
        self.h1, self.h2, self.out = r(BATCH, 300), r(BATCH, 100), r(BATCH, 10)
        self.g3, self.g2, self.g1 = r(BATCH, 10), r(BATCH, 100), r(BATCH, 300)
        self.dw1, self.dw2, self.dw3 = r(300, 784), r(100, 300), r(10, 100)
        self.flops = 2 * BATCH * (
            784 * 300 + 300 * 100 + 100 * 10  # forward
            + 784 * 300 + 300 * 100 + 100 * 10  # weight gradients
            + 300 * 100 + 100 * 10  # input gradients of layers 2 and 3
        )

    def step(self) -> None:
        mm = torch.mm
        mm(self.x, self.w1.t(), out=self.h1)
        mm(self.h1, self.w2.t(), out=self.h2)
        mm(self.h2, self.w3.t(), out=self.out)
        mm(self.g3.t(), self.h2, out=self.dw3)
        mm(self.g3, self.w3, out=self.g2)
        mm(self.g2.t(), self.h1, out=self.dw2)
        mm(self.g2, self.w2, out=self.g1)
        mm(self.g1.t(), self.x, out=self.dw1)

    def run(self, steps: int) -> float:
        def loop() -> None:
            for _ in range(steps):
                self.step()

        return timed(loop)


# ---------------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500,
                   help="steps per repeat for ticketlab and the roofline (default 500)")
    p.add_argument("--loader-steps", type=int, default=None,
                   help="steps per repeat for the DataLoader pipeline (default steps/3)")
    p.add_argument("--repeats", type=int, default=5, help="rounds; the best counts (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder holding mnist/ (default: $TICKETLAB_DATA, else ../shared/data)")
    p.add_argument("--quick", action="store_true", help="smoke test: 100 steps, 1 repeat")
    args = p.parse_args()
    t_start = time.perf_counter()
    busy = busy_cpus()
    if args.quick:
        args.steps, args.repeats = 100, 1
    loader_steps = args.loader_steps or max(1, args.steps // 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or Path(os.environ.get("TICKETLAB_DATA") or DEFAULT_DATA)

    # Data: the engine's normalised tensors (val/test cut to one batch: train() evaluates
    # at its start and end whatever eval_every is) and the raw uint8 images for the loader.
    full = load_dataset("mnist", data_dir)
    data = dataclasses.replace(full, x_val=full.x_val[:BATCH], y_val=full.y_val[:BATCH],
                               x_test=full.x_test[:BATCH], y_test=full.y_test[:BATCH])
    raw = load_raw("mnist", data_dir)
    loader = DataLoader(PerSampleMNIST(raw.x_train[:, 0], raw.y_train), batch_size=BATCH,
                        shuffle=True, num_workers=0)

    init = build_model("lenet_300_100", (1, 28, 28), 10)
    state = {k: v.detach().clone() for k, v in init.state_dict().items()}
    mask = prune_magnitude(init, Mask.dense(init), 0.8)  # one shot to 20% of each layer
    gemms = Gemms()

    # Warm-up (the first optimizer construction imports torch._dynamo; first kernels).
    ticketlab_run(data, state, 20, None)
    ticketlab_run(data, state, 20, mask)
    dataloader_run(loader, state, 20)
    gemms.run(50)

    benches: dict[str, tuple[int, Callable[[], float]]] = {
        "ticketlab": (args.steps, lambda: ticketlab_run(data, state, args.steps, None)),
        "ticketlab (masked)": (args.steps, lambda: ticketlab_run(data, state, args.steps, mask)),
        "DataLoader pipeline": (loader_steps, lambda: dataloader_run(loader, state, loader_steps)),
        "matmul roofline": (args.steps, lambda: gemms.run(args.steps)),
    }
    best: dict[str, float] = dict.fromkeys(benches, 0.0)
    for _ in range(args.repeats):  # interleaved, so slow phases of a busy machine hit all
        for name, (steps, fn) in benches.items():
            best[name] = max(best[name], steps / fn())

    others = "unknown" if busy is None else f"{busy:.1f}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_model()} "
          f"({os.cpu_count()} logical CPUs, {others} busy with other work at start)")
    if busy is not None and busy >= 0.5:
        print("warning: the machine was busy; the best-of-repeats ratios are usually still "
              "fair, but with several threads OpenMP stalls can slow whole runs (--threads 1)")
    print(f"LeNet-300-100, MNIST, batch {BATCH}, Adam lr {LR}; best of {args.repeats} x "
          f"{args.steps} steps ({loader_steps} for the DataLoader)")
    print(f"mask density {mask.density():.3f}; roofline = {gemms.flops / 1e6:.1f} MFLOP/step "
          f"of GEMMs ({best['matmul roofline'] * gemms.flops / 1e9:.1f} GFLOP/s)")
    print()
    print(f"{'':<22}{'steps/s':>10}{'ms/step':>10}")
    for name, rate in best.items():
        print(f"{name:<22}{rate:>10.0f}{1e3 / rate:>10.3f}")
    print()
    t, tm, dl, roof = (best[k] for k in benches)
    density = f"{mask.density():.0%} density"
    print(f"ticketlab vs DataLoader pipeline: {t / dl:.1f}x")
    print(f"ticketlab (masked, {density}) vs DataLoader pipeline: {tm / dl:.1f}x")
    print(f"ticketlab (masked, {density}) vs ticketlab: {tm / t:.2f}x")
    print(f"ticketlab vs matmul roofline: {t / roof:.2f}x")
    print(f"DataLoader pipeline vs matmul roofline: {dl / roof:.2f}x")
    print(f"(total wall time {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
