"""deploy.bench.measure and model_bytes, and their table and figure. No test asserts a speed
or a speed ratio: this machine is shared and noisy; only the bookkeeping is checked."""

from __future__ import annotations

import warnings

import pytest
import torch
from rich.console import Console
from torch import nn

from ticketlab.deploy import bench
from ticketlab.deploy.bench import measure, model_bytes
from ticketlab.errors import TicketlabError
from ticketlab.report.deploy import bench_table, speedup_figure

FAST = {"min_repeats": 5, "min_seconds": 0.0, "warmup": 1}


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def test_rows_cover_every_model_and_batch_with_consistent_numbers() -> None:
    dense, half = tiny(0), tiny(1)
    half.eval()
    half[1].train()  # a mixed module gets its own modes back, not one for all
    seen = []
    rows = measure({"dense": dense, "other": half}, (8,), (1, 4, 32), **FAST,
                   progress=lambda done, total: seen.append((done, total)))
    assert [(r["batch"], r["model"]) for r in rows] == [
        (b, m) for b in (1, 4, 32) for m in ("dense", "other")]
    assert seen == [(2, 6), (4, 6), (6, 6)]
    assert dense.training and dense[0].training  # previous modes restored
    assert [m.training for m in half] == [False, True, False]
    for r in rows:
        assert set(r) == {"model", "batch", "median_ms", "p90_ms", "throughput",
                          "peak_memory_mb", "speedup", "repeats"}
        assert r["repeats"] >= 5
        assert r["p90_ms"] >= r["median_ms"] > 0
        assert r["throughput"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
        assert r["peak_memory_mb"] > 0
        if r["model"] == "dense":
            assert r["speedup"] == 1.0
        else:
            base = next(b for b in rows if b["model"] == "dense" and b["batch"] == r["batch"])
            assert r["speedup"] == pytest.approx(base["median_ms"] / r["median_ms"])


def test_interleaved_rounds_on_a_fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model 10x faster (on a fake clock) runs 10 times more per round than the slow one,
    each in a block after one untimed call, and the rounds go on until each has min_repeats
    and min_seconds."""
    now = [0]
    calls: list[str] = []
    monkeypatch.setattr(bench, "_clock", lambda: now[0])

    def model(name: str, ns: int):
        def call(x: torch.Tensor) -> torch.Tensor:
            calls.append(name)
            now[0] += ns
            return x
        return call

    rows = measure({"slow": model("slow", 1_000_000), "fast": model("fast", 100_000)}, (2,),
                   (3,), baseline="slow", min_repeats=3, min_seconds=0.05, warmup=2)
    slow, fast = rows
    assert calls[:4] == ["slow", "fast"] * 2  # warm-up, interleaved
    timed = calls[4:]
    block = bench.BLOCK
    one_round = ["slow"] * (block + 1) + ["fast"] * (10 * block + 1)
    assert timed[:len(one_round)] == one_round
    assert slow["repeats"] == 51 and fast["repeats"] == 510  # 0.05 s each, whole blocks
    assert slow["median_ms"] == pytest.approx(1.0) and fast["p90_ms"] == pytest.approx(0.1)
    assert slow["speedup"] == 1.0 and fast["speedup"] == pytest.approx(10.0)
    assert fast["throughput"] == pytest.approx(3 / 1e-4)


def test_a_callable_that_is_not_a_module() -> None:
    w = torch.randn(3, 8)
    calls = []

    def matmul(x: torch.Tensor) -> torch.Tensor:
        calls.append(torch.is_inference_mode_enabled())
        return x @ w.t()

    class Mode(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(not self.training and torch.is_inference_mode_enabled())
            return x

    rows = measure({"dense": Mode(), "matmul": matmul}, (8,), (4,), **FAST)
    row = next(r for r in rows if r["model"] == "matmul")
    assert row["repeats"] >= 5 and row["median_ms"] > 0
    assert row["peak_memory_mb"] is None  # its memory may live outside PyTorch
    assert len(calls) >= 12 and all(calls)  # eval mode, inference mode, every call


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"baseline": "nope"}, "baseline 'nope'"),
    ({"batch_sizes": (64, 0)}, "batch size 0"),
    ({"batch_sizes": ()}, "no batch sizes"),
    ({"min_repeats": 0}, "min_repeats=0"),
])
def test_bad_input_is_a_one_line_error(kwargs: dict, words: str) -> None:
    with pytest.raises(TicketlabError, match=words) as info:
        measure({"dense": tiny()}, (8,), **{**FAST, **kwargs})
    assert "\n" not in str(info.value)


def test_peak_memory_grows_with_batch_for_a_big_layer() -> None:
    big = nn.Linear(1024, 4096)
    rows = measure({"dense": big}, (1024,), (1, 64, 256), min_repeats=2, min_seconds=0.0,
                   warmup=0)
    peaks = [r["peak_memory_mb"] * 2**20 for r in rows]
    state = model_bytes(big)
    assert peaks[0] >= state + 4 * (1024 + 4096)  # state, input, output of batch 1
    # from batch 64 to 256 the input and output alone add 192 * (1024 + 4096) floats
    assert peaks[2] - peaks[1] >= 192 * 4 * (1024 + 4096)
    assert peaks[0] < peaks[1] < peaks[2]


def test_peak_memory_sees_temporaries_freed_before_the_end() -> None:
    class Wide(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.repeat(1, 64) * 2).sum(dim=1)  # 64x the input, gone by the end

    rows = measure({"dense": Wide()}, (1024,), (64,), min_repeats=2, min_seconds=0.0,
                   warmup=0)
    assert rows[0]["peak_memory_mb"] * 2**20 >= 64 * 64 * 1024 * 4


def test_model_bytes_counts_stored_values_and_indices_of_sparse_tensors() -> None:
    dense = nn.Linear(100, 50)
    assert model_bytes(dense) == 4 * (100 * 50 + 50)
    weight = dense.weight.detach() * (torch.rand(50, 100) < 0.1)
    nnz = int((weight != 0).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        csr = weight.to_sparse_csr()
        coo = weight.to_sparse()

    class Sparse(nn.Module):
        def __init__(self, w: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("weight", w)
            self.bias = nn.Parameter(torch.zeros(50))

    index_bytes = csr.col_indices().element_size()
    assert model_bytes(Sparse(csr)) == 4 * nnz + index_bytes * (nnz + 51) + 4 * 50
    assert model_bytes(Sparse(coo)) == 4 * nnz + 8 * 2 * nnz + 4 * 50
    assert model_bytes(Sparse(csr)) < model_bytes(dense)


def test_table_and_figure_build() -> None:
    rows = measure({"dense": tiny(0), "ticket [1.9%]": tiny(1)}, (8,), (1, 4), **FAST)
    table = bench_table(rows, title="bench")
    console = Console(width=160, record=True)
    console.print(table)
    text = console.export_text()
    assert "ticket [1.9%]" in text and "1.0x" in text and "bench" in text
    assert table.row_count == 4

    points = [{"density": d, "batch": b, "speedup": s, "format": f}
              for f in ("sparse", "compact") for b in (1, 64)
              for d, s in ((1.0, 1.0), (0.2, 2.5), (0.019, 6.0 if b == 64 else 0.8))]
    fig = speedup_figure(points, "LeNet-300-100 ticket series")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    left, right = ax.get_xlim()
    assert left > right  # 100% on the left
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"batch 1", "batch 64", "sparse", "compact", "ideal: 1 / density"} <= set(labels)
    ideal = next(line for line in ax.get_lines() if line.get_linestyle() == "--")
    assert list(ideal.get_ydata()) == pytest.approx([1.0, 5.0, 100 / 1.9])
    fig.savefig(__import__("io").BytesIO(), format="png")
    # a compact series gives its own ideal (multiply-accumulates saved), drawn instead
    for p in points:
        p["ideal"] = 1 / p["density"] ** 2
    ax = speedup_figure(points, "Conv-4 by filters").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ideal: multiply-accumulates saved" in labels
    ideal = next(line for line in ax.get_lines() if line.get_linestyle() == "--")
    assert list(ideal.get_ydata()) == pytest.approx([1.0, 25.0, 1 / 0.019 ** 2])


def test_count_macs_by_hand() -> None:
    from ticketlab.deploy.bench import count_macs

    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    # conv: 4 x 5 x 5 outputs of 2 x 3 x 3 products; linear: 3 outputs of 100; per sample
    assert count_macs(model, torch.zeros(2, 2, 5, 5)) == 2 * (100 * 18 + 3 * 100)
