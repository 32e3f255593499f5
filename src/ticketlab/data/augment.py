"""Random crop with zero padding and horizontal flip, on whole batches on the training device.

The standard CIFAR augmentation of Frankle & Carbin and OpenLTH: pad 4 pixels on each side,
crop a random 32x32 window, flip half of the images. The random draws depend only on
(trial seed, step), from `derive_seed(seed, "augment", step)`, never on a running generator,
so a resumed, rewound or replicated run sees exactly the same images at the same step.

The draws (two offsets and a flip bit per image) are small and made on a CPU generator, so
they are the same on every device; the pixels are moved on x's device by one gather over a
padded copy, with no per-image Python loop.

Padding value: torchvision and OpenLTH pad the raw image with 0 (black) *before*
normalising, so the pad holds the normalised value of a black pixel, (0 - mean) / std per
channel: `Dataset.black_pixel`. Pass it as `fill` to match them; `fill=0.0` pads with the
channel means instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ticketlab.config import derive_seed


def augment_draws(seeds: Sequence[int], step: int, batch: int, padding: int = 4,
                  flip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row offsets, column offsets, flip bits), each R x B int64 on the CPU."""
    rows, cols, flips = [], [], []
    for seed in seeds:
        g = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "augment", step))
        rows.append(torch.randint(0, 2 * padding + 1, (batch,), generator=g))
        cols.append(torch.randint(0, 2 * padding + 1, (batch,), generator=g))
        bits = torch.randint(0, 2, (batch,), generator=g)  # drawn even when unused: flip
        flips.append(bits if flip else torch.zeros_like(bits))  # never shifts the crops
    return torch.stack(rows), torch.stack(cols), torch.stack(flips)


def augment(x: torch.Tensor, seeds: Sequence[int], step: int, padding: int = 4,
            flip: bool = True, *, fill: float | Sequence[float]) -> torch.Tensor:
    """Randomly shifted (by up to `padding` pixels) and flipped copies of the images.

    x: R x B x C x H x W, one batch per replicate, replicate r augmented with `seeds[r]`
    (a single batch B x C x H x W takes one seed). `fill`: the padding, one value or one per
    channel (see the module docstring). Returns a new tensor like x; x is not modified.
    """
    if x.dim() == 4:
        return augment(x[None], seeds, step, padding, flip, fill=fill)[0]
    if x.dim() != 5 or len(seeds) != x.shape[0]:
        raise ValueError(f"expected x of R x B x C x H x W with R = len(seeds) = "
                         f"{len(seeds)}, got {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    r, b, c, h, w = x.shape
    dy, dx, flips = (t.to(x.device) for t in augment_draws(seeds, step, b, padding, flip))
    hp, wp = h + 2 * padding, w + 2 * padding

    fills = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
    if fills.numel() not in (1, c):
        raise ValueError(f"fill needs 1 or {c} values, got {fills.numel()}")
    padded = fills.expand(c).view(1, c, 1, 1).expand(r * b, c, hp, wp).contiguous()
    padded[:, :, padding:padding + h, padding:padding + w] = x.reshape(r * b, c, h, w)

    i = torch.arange(h, device=x.device)
    j = torch.arange(w, device=x.device)
    src_rows = dy.reshape(-1, 1) + i  # RB x H
    jj = torch.where(flips.reshape(-1, 1).bool(), (w - 1) - j, j)  # a flip reverses columns
    src_cols = dx.reshape(-1, 1) + jj  # RB x W
    index = (src_rows[:, :, None] * wp + src_cols[:, None, :]).reshape(r * b, 1, h * w)
    out = padded.reshape(r * b, c, hp * wp).gather(2, index.expand(r * b, c, h * w))
    return out.reshape(r, b, c, h, w)
