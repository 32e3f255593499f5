"""Latency, throughput and peak memory of models side by side, measured in one process.

A speed-up is only meaningful between models timed on the same machine at the same moment:
a shared CPU drifts by tens of percent over seconds. So the models of one batch size are
timed interleaved (every round runs each model for about the same time), and only ratios
from one call are compared. Each model runs a block of calls in a row, after an untimed one:
alternating single calls would charge a small model with the cache misses of the big one
before it (measured: a 1.9%-dense LeNet layer looks 2.0x faster than dense that way, 5.6x in
blocks, which is what it does deployed alone). Nothing here sets the thread count: the
caller does (`ticketlab.threads`).
"""

from __future__ import annotations

import gc
import numbers
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.models.cost import count_macs  # noqa: F401  (the ideal speed-ups use it)

_clock = time.perf_counter_ns  # a module global, so tests can run a fake clock
BLOCK = 3  # timed calls in a row of the slowest model per round (the others: as many seconds)
MAX_PER_ROUND = 64  # a fast model runs at most this many times per round of a slow one
_SPARSE_PARTS = {
    torch.sparse_csr: ("values", "crow_indices", "col_indices"),
    torch.sparse_csc: ("values", "ccol_indices", "row_indices"),
    torch.sparse_bsr: ("values", "crow_indices", "col_indices"),
    torch.sparse_bsc: ("values", "ccol_indices", "row_indices"),
    torch.sparse_coo: ("_values", "_indices"),  # the stored ones, coalesced or not
}


def tensor_bytes(t: Tensor) -> int:
    """Bytes a tensor stores: a sparse one by its values and indices, not its dense shape."""
    parts = _SPARSE_PARTS.get(t.layout)
    if parts is None:
        return t.numel() * t.element_size()
    return sum(tensor_bytes(getattr(t, p)()) for p in parts)


def model_bytes(model: nn.Module) -> int:
    """Parameters + buffers in bytes (shared tensors once; sparse ones by what they store).

    Tensors kept as plain attributes rather than registered parameters or buffers are not
    seen, as they are not by `state_dict` either.
    """
    tensors = [*model.parameters(), *model.buffers()]
    return sum(tensor_bytes(t) for t in tensors)


def measure(models: Mapping[str, Callable[[Tensor], Tensor]], input_shape: tuple[int, ...],
            batch_sizes: Sequence[int] = (1, 64, 256), *, baseline: str = "dense",
            min_repeats: int = 50, min_seconds: float = 1.0, warmup: int = 10,
            device: str | torch.device = "cpu", seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Forward latency of each model at each batch size, and its speed-up over `baseline`.

    Each batch size gets one fixed input, `torch.randn((batch, *input_shape))` from `seed`
    (drawn on the CPU, so CPU and CUDA see the same numbers), shared by all models. After
    `warmup` interleaved calls each, the models are timed in rounds under
    `torch.inference_mode()`: in each round, each model makes one untimed call and then a
    block of timed calls in a row, BLOCK for the slowest and n times more for a model n
    times faster (at most MAX_PER_ROUND), so every model gets about the same wall time, with
    its own data in cache, and drifts of the machine hit all alike. Rounds continue until every
    model has at least `min_repeats` repeats and `min_seconds` of timed calls. CUDA is
    synchronized before and after every timed call. Python's garbage collector is off
    while timing, as in `timeit`.

    nn.Modules are moved to `device` and put in eval mode for the call (their previous mode
    is restored after); any other callable is called as it is (e.g. an onnxruntime wrapper).

    Peak memory (MB = 2**20 bytes), measured on one extra call outside the timed ones:
    the model's state (`model_bytes`) + the input batch + the peak of bytes allocated and
    not yet freed during the call (activations, workspaces, the output), counted from the
    call's start. On CUDA that peak is `max_memory_allocated` after
    `reset_peak_memory_stats`, less what was allocated before the call; on the CPU, where
    PyTorch keeps no such counter, it is the peak of the running sum of the allocations
    and frees that `torch.profiler` (profile_memory=True) records during the call. Only
    memory from PyTorch's allocator is seen: libraries allocating their own (MKL or oneDNN
    scratch, onnxruntime's arena) are not, so for a callable that is not an nn.Module the
    peak is None rather than a number that would look small.

    Returns one row per (batch, model), batches in the given order and models in the
    mapping's: {"model", "batch", "median_ms", "p90_ms", "throughput" (samples/s from the
    median), "peak_memory_mb", "speedup" (baseline median / this median; exactly 1.0 for
    the baseline), "repeats"}. `progress(done, total)` is called after each batch size
    with the rows finished so far.
    """
    _check(models, input_shape, batch_sizes, baseline, min_repeats, min_seconds, warmup)
    device = torch.device(device)
    modules = {name: m for name, m in models.items() if isinstance(m, nn.Module)}
    was_training = [(sub, sub.training) for m in modules.values() for sub in m.modules()]
    for m in modules.values():
        m.to(device).eval()
    rows: list[dict] = []
    try:
        for batch in batch_sizes:
            g = torch.Generator().manual_seed(seed)
            x = torch.randn((batch, *input_shape), generator=g).to(device)
            times = _time_interleaved(models, x, min_repeats, min_seconds, warmup)
            base = statistics.median(times[baseline])
            for name, model in models.items():
                median = statistics.median(times[name])
                peak = _peak_bytes(model, x) if name in modules else None
                rows.append({
                    "model": name, "batch": batch,
                    "median_ms": median * 1e3, "p90_ms": _p90(times[name]) * 1e3,
                    "throughput": batch / median,
                    "peak_memory_mb": None if peak is None else peak / 2**20,
                    "speedup": 1.0 if name == baseline else base / median,
                    "repeats": len(times[name])})
            if progress is not None:
                progress(len(rows), len(batch_sizes) * len(models))
    finally:
        for sub, training in was_training:
            sub.training = training
    return rows


def _check(models: Mapping[str, object], input_shape: tuple[int, ...],
           batch_sizes: Sequence[int], baseline: str, min_repeats: int, min_seconds: float,
           warmup: int) -> None:
    if not models:
        raise TicketlabError("no models to measure: pass at least the baseline model")
    if baseline not in models:
        raise TicketlabError(f"baseline {baseline!r} is not among the models measured "
                             f"({', '.join(models)}): name one of them as the baseline")
    for b in batch_sizes:
        if not isinstance(b, numbers.Integral) or isinstance(b, bool) or b < 1:
            raise TicketlabError(f"batch size {b!r} is not a whole number >= 1: use e.g. 1, "
                                 "64 or 256")
    if not batch_sizes:
        raise TicketlabError("no batch sizes given: pass at least one, e.g. 64")
    if any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise TicketlabError(f"input shape {tuple(input_shape)} must be whole numbers >= 1 "
                             "without the batch dimension, e.g. (1, 28, 28)")
    if min_repeats < 1 or min_seconds < 0 or warmup < 0:
        raise TicketlabError(f"min_repeats={min_repeats}, min_seconds={min_seconds}, "
                             f"warmup={warmup}: repeats must be >= 1, the others >= 0")


def _sync(x: Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def _call_seconds(model: Callable[[Tensor], Tensor], x: Tensor) -> float:
    _sync(x)
    start = _clock()
    model(x)
    _sync(x)
    return (_clock() - start) * 1e-9


def _time_interleaved(models: Mapping[str, Callable[[Tensor], Tensor]], x: Tensor,
                      min_repeats: int, min_seconds: float, warmup: int
                      ) -> dict[str, list[float]]:
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            first = {name: [] for name in names}  # warm-up, or the first round: the weights
            for _ in range(max(warmup, 1)):
                for name in names:
                    first[name].append(_call_seconds(models[name], x))
            if warmup == 0:
                times = first
            estimate = {name: max(statistics.median(t), 1e-9) for name, t in first.items()}
            slowest = max(estimate.values())
            per_round = {name: min(MAX_PER_ROUND, max(BLOCK, round(BLOCK * slowest /
                                                                  estimate[name])))
                         for name in names}
            # one round: each model in turn, one untimed call (its weights back in cache,
            # as when it runs alone) then its block of timed calls
            while not all(len(times[n]) >= min_repeats and sum(times[n]) >= min_seconds
                          for n in names):
                for name in names:
                    models[name](x)
                    for _ in range(per_round[name]):
                        times[name].append(_call_seconds(models[name], x))
    finally:
        if gc_was_on:
            gc.enable()
    return times


def _p90(seconds: list[float]) -> float:
    if len(seconds) < 2:
        return seconds[0]
    return statistics.quantiles(seconds, n=10, method="inclusive")[-1]


def _peak_bytes(model: nn.Module, x: Tensor) -> int:
    """`measure`'s peak memory of one call, in bytes (see its docstring)."""
    fixed = model_bytes(model) + tensor_bytes(x)
    with torch.inference_mode():
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
            before = torch.cuda.memory_allocated(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
            out = model(x)
            torch.cuda.synchronize(x.device)
            extra = torch.cuda.max_memory_allocated(x.device) - before
        else:
            extra, out = _cpu_call_peak(model, x)
    del out
    return fixed + max(extra, 0)


def _cpu_call_peak(model: nn.Module, x: Tensor) -> tuple[int, Tensor]:
    """Peak of the running sum of CPU allocations (+) and frees (-) during one call.

    The allocation events are read from the profiler's raw (Kineto) event list: its public
    `events()` folds allocations into the operators that made them and keeps only frees
    as separate events, which loses the order the peak depends on.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with _kineto_quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        out = model(x)
    assert p.profiler is not None and p.profiler.kineto_results is not None
    events = sorted((e.start_ns(), e.nbytes()) for e in p.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, out


@contextmanager
def _kineto_quiet() -> Iterator[None]:
    """Kineto writes a `profiler_start`/`profiler_stop` line to the process's stderr on every
    profile, which would clutter `ticketlab bench`'s output; drop those lines, pass any
    other through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(True)
                    if "ActivityProfilerHandler" not in line]
            if kept:
                sys.stderr.write("".join(kept))


