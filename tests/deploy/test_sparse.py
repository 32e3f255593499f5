"""The sparse export's layer and storage: exact structure, float-rounding-close outputs."""

import pytest
import torch
from torch import nn

from ticketlab.deploy.sparse import (
    MAX_DENSITY,
    MIN_WEIGHTS,
    SparseLinear,
    dense_state,
    goes_sparse,
    sparse_state,
    sparsify_model,
)
from ticketlab.models import build_model
from ticketlab.pruning import Mask

# CSR sums each output's products in another order than the dense kernel: float32 rounding
# moves outputs by ~1e-7 of their scale per product; 1e-5 leaves room for a few hundred
ATOL = 1e-5


def masked_linear(out_f=300, in_f=784, density=0.05, seed=0, dead_inputs=100):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_f, out_f)
    keep = torch.rand(out_f, in_f, generator=g) < density
    keep[:, :dead_inputs] = False  # inputs no kept weight reads: skipped by the layer
    with torch.no_grad():
        layer.weight.mul_(keep)
    return layer, keep


@pytest.mark.parametrize("dead_inputs", [100, 500])  # 500: most inputs unread, gathered
@pytest.mark.parametrize("batch", [1, 2, 64])
def test_sparse_linear_computes_the_masked_product(batch, dead_inputs):
    layer, keep = masked_linear(dead_inputs=dead_inputs)
    sparse = SparseLinear(layer.weight, keep, layer.bias)
    x = torch.randn(batch, 784, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = layer(x), sparse(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=ATOL, rtol=0)
    assert sparse.weight.layout == torch.sparse_csr and sparse.weight.col_indices().dtype == \
        torch.int32
    assert sparse.weight.values().numel() == int(keep.sum())  # only kept weights stored
    assert sparse.gather == (dead_inputs == 500)
    assert len(sparse.inputs) == (int(keep.any(0).sum()) if sparse.gather else 784)
    assert torch.equal(sparse.dense_weight(), layer.weight.detach())


def test_sparse_linear_chains_without_copies_and_takes_any_leading_shape():
    a, ka = masked_linear(300, 784)
    b, kb = masked_linear(100, 300, dead_inputs=0)
    sa, sb = SparseLinear(a.weight, ka, a.bias), SparseLinear(b.weight, kb, b.bias)
    x = torch.randn(64, 784)
    with torch.inference_mode():
        h = sa(x).relu()
        assert h.t().is_contiguous()  # feature-major: the next sparse layer reads it as is
        assert torch.allclose(sb(h), b(a(x).relu()), atol=ATOL, rtol=0)
        x3 = torch.randn(2, 5, 784)
        assert torch.allclose(sa(x3), a(x3), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dead_inputs", [100, 500])
def test_a_sparse_layer_deep_copies_and_keeps_its_mask(dead_inputs):
    import copy

    layer, keep = masked_linear(dead_inputs=dead_inputs)
    sparse = SparseLinear(layer.weight, keep, layer.bias)
    assert torch.equal(sparse.kept(), keep)
    twin = copy.deepcopy(nn.Sequential(sparse))[0]  # torch alone cannot copy CSR tensors
    x = torch.randn(8, 784)
    with torch.inference_mode():
        assert torch.equal(twin(x), sparse(x))
    assert twin.weight is not sparse.weight and torch.equal(twin.kept(), keep)


def test_a_kept_weight_that_is_zero_stays_kept():
    layer, keep = masked_linear()
    r, c = keep.nonzero()[0]
    with torch.no_grad():
        layer.weight[r, c] = 0.0
    assert SparseLinear(layer.weight, keep, layer.bias).weight.values().numel() == \
        int(keep.sum())


def test_the_rule_picks_big_sparse_linear_layers_only():
    big = nn.Linear(100, MIN_WEIGHTS // 100 + 1)
    small = nn.Linear(10, 10)
    conv = nn.Conv2d(64, 64, 3)
    sparse_mask = torch.rand(big.weight.shape) < MAX_DENSITY / 2
    assert goes_sparse(sparse_mask, big)
    assert not goes_sparse(torch.ones_like(big.weight, dtype=torch.bool), big)
    assert not goes_sparse(torch.rand(10, 10) < 0.01, small)
    assert not goes_sparse(torch.rand(conv.weight.shape) < 0.01, conv)


def lenet_ticket(density=0.03, seed=0):
    model = build_model("lenet_300_100", (1, 28, 28), 10, seed=seed)
    g = torch.Generator().manual_seed(seed)
    mask = Mask.dense(model)
    mask = mask.with_tensors({k: torch.rand(v.shape, generator=g) < density
                              for k, v in mask.items()})
    return model, mask


def test_sparsify_model_leaves_the_original_alone_and_matches_it_masked():
    model, mask = lenet_ticket()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparse, records = sparsify_model(model, mask)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r["format"] for r in records] == ["csr", "csr", "dense"]  # fc3: 1,000 weights
    x = torch.rand(32, 1, 28, 28)
    with torch.inference_mode():
        want = mask.apply_(model)(x)
        assert torch.allclose(sparse(x), want, atol=ATOL, rtol=0)


def test_sparse_storage_round_trip_keeps_only_kept_values():
    model, mask = lenet_ticket(density=0.02)
    masked = mask.apply_(model)
    tensors, shapes = sparse_state(masked, mask)
    assert tensors["fc1.weight.values"].numel() == int(mask["fc1.weight"].sum())
    assert tensors["fc1.weight.index"].dtype == torch.int32  # 235,200 positions
    assert tensors["fc3.weight.index"].dtype == torch.int16  # 1,000 positions
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    dense = sum(t.numel() * t.element_size() for t in masked.state_dict().values())
    assert stored < 0.1 * dense
    state, back = dense_state(tensors, shapes, mask.groups)
    assert back == mask
    assert all(torch.equal(state[k], v) for k, v in masked.state_dict().items())


def test_damaged_sparse_storage_is_refused():
    from ticketlab.errors import TicketlabError

    model, mask = lenet_ticket()
    tensors, shapes = sparse_state(mask.apply_(model), mask)
    del tensors["fc2.weight.index"]
    with pytest.raises(TicketlabError, match=r"lacks fc2\.weight\.index"):
        dense_state(tensors, shapes, mask.groups)
    tensors, _ = sparse_state(model, mask)
    tensors["fc2.weight.index"][-1] = 30_000
    with pytest.raises(TicketlabError, match="does not fit its shape"):
        dense_state(tensors, shapes, mask.groups)
