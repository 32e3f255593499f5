"""Batched random crop + flip: determinism by (seed, step) and exact shifted copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ticketlab.data import load_dataset
from ticketlab.data.augment import augment, augment_draws


def _batch(r: int, b: int, c: int = 3, h: int = 8, w: int = 6) -> torch.Tensor:
    return torch.randn(r, b, c, h, w, generator=torch.Generator().manual_seed(r * 100 + b))


def _reference(img: torch.Tensor, dy: int, dx: int, flipped: bool, padding: int,
               fill: torch.Tensor) -> torch.Tensor:
    """The crop of one image, written out in numpy: pad with fill, take the window, flip."""
    c, h, w = img.shape
    padded = np.empty((c, h + 2 * padding, w + 2 * padding), np.float32)
    padded[:] = fill.numpy().reshape(-1, 1, 1)
    padded[:, padding:padding + h, padding:padding + w] = img.numpy()
    crop = padded[:, dy:dy + h, dx:dx + w]
    return torch.from_numpy(np.ascontiguousarray(crop[:, :, ::-1] if flipped else crop))


@pytest.mark.parametrize("r", [1, 3])
def test_each_image_is_a_shifted_maybe_flipped_copy(r):
    x, seeds, fill = _batch(r, 16), [5, 6, 7][:r], torch.tensor([-1.5, 0.25, 2.0])
    out = augment(x, seeds, step=11, padding=2, fill=fill.tolist())
    assert out.shape == x.shape and out.dtype == x.dtype
    dy, dx, flips = augment_draws(seeds, 11, 16, padding=2)
    for i in range(r):
        for k in range(16):
            expected = _reference(x[i, k], int(dy[i, k]), int(dx[i, k]), bool(flips[i, k]), 2,
                                  fill)
            assert torch.equal(out[i, k], expected)  # bit-exact, padding included
    assert flips.float().mean() not in (0.0, 1.0)  # both cases were checked
    assert {int(v) for v in dy.flatten()} == set(range(5))  # every offset 0..2*padding


def test_same_seed_and_step_give_the_same_images():
    x = _batch(2, 32)
    a = augment(x, [0, 1], step=3, fill=0.0)
    assert torch.equal(a, augment(x.clone(), [0, 1], step=3, fill=0.0))
    assert not torch.equal(a, augment(x, [0, 1], step=4, fill=0.0))  # another step
    assert not torch.equal(a[0], augment(x, [2, 1], step=3, fill=0.0)[0])  # another seed
    assert torch.equal(a[1], augment(x, [2, 1], step=3, fill=0.0)[1])  # replicates independent
    same = torch.stack([x[0], x[0]])
    both = augment(same, [0, 1], step=3, fill=0.0)
    assert not torch.equal(both[0], both[1])  # replicates with different seeds differ
    assert torch.equal(augment(x[0], [0], step=3, fill=0.0), a[0])  # B x C x H x W: one seed
    assert torch.equal(x, _batch(2, 32))  # the input is left alone


def test_no_flip_and_no_padding():
    x = _batch(1, 8)
    assert torch.equal(augment(x, [0], 0, padding=0, flip=False, fill=0.0), x)
    dy, dx, _ = augment_draws([0], 0, 8, padding=4, flip=True)
    dy2, dx2, flips = augment_draws([0], 0, 8, padding=4, flip=False)
    assert torch.equal(dy, dy2) and torch.equal(dx, dx2) and not flips.any()
    with pytest.raises(ValueError, match=r"R = len.seeds. = 2"):
        augment(x, [0, 1], 0, fill=0.0)
    with pytest.raises(ValueError, match="fill needs 1 or 3 values"):
        augment(x, [0], 0, fill=[0.0, 1.0])


def test_black_pixel_is_what_zero_padding_before_normalising_gives():
    ds = load_dataset("digits")
    (black,) = ds.black_pixel
    assert black < 0
    # A raw 0 pixel normalised as the dataset did: the darkest value present.
    assert ds.x_train.min().item() == pytest.approx(black, rel=1e-6)
