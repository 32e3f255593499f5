"""Instability analysis of a finished `find` run (Frankle, Dziugaite, Roy & Carbin 2020,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis").

For each seed, level L and step k: W_k is the DENSE network's state at step k of the run's
level-0 training; level L's mask is put on it (level 0: none) and two copies are trained from
step k to the end of the run's budget with two different data orders (and augmentation
draws, which follow the data seed). The test error is measured at `POINTS` evenly spaced
points of the straight line between the two trained copies (batch norm recomputed at each
point from a fixed subset of the training images); the barrier is the highest error minus
the mean of the two ends', and the network is stable at k when the barrier is at most 2
percentage points (`STABLE_BARRIER`).

Caveat: the paper finds each level's mask by IMP rewound to k itself; here every k uses the
run's own mask of level L, found with the run's --rewind. For k equal to the run's rewind
step the two agree.

W_k is the run's own snapshot when k is the rewind step (or its init.safetensors at k = 0),
else level 0 is trained again from its initialisation to k: the data order is a function of
(seed, step) only, so this reproduces the run's weights bit-exactly on the same device and
thread count; a retraining that passes the rewind step checks it against the run's snapshot
and records the outcome (`retrain_reproduces_run`).

Stored under RUN_DIR/instability/ (every file written atomically):

    dense/seed_<s>/at_<k>.safetensors           W_k retrained (not for k = 0 or the rewind step)
    seed_<s>/level_<LL>/at_<k>/copy_<c>.safetensors   the trained copies (metadata: data seed,
                                                final test accuracy)
    seed_<s>/level_<LL>/at_<k>/copy_<c>.checkpoint.pt  only while a copy trains (resume point)
    seed_<s>/level_<LL>/at_<k>/result.json      the line, the barrier, stability
    instability.json, instability.csv           one row per (seed, level, k) computed so far
    instability_line/_barrier/_matching.{png,svg}   figures (report/instability.py)

An interrupted analysis resumes: a trained copy is never trained again, and a copy stopped
mid-training continues from its checkpoint (written every `Runtime.checkpoint_every`
seconds at evaluations, and on Ctrl-C).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ticketlab.config import ExperimentConfig, Runtime, Step, derive_seed, parse_steps
from ticketlab.errors import DamagedFile, TicketlabError
from ticketlab.experiments.context import Context
from ticketlab.experiments.imp import open_run, replay_dense
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.io import atomic_write_text, load_tensors, read_json, save_tensors, write_json
from ticketlab.pruning import Mask
from ticketlab.threads import using_threads
from ticketlab.training import (
    STABLE_BARRIER,
    Checkpoint,
    EarlyStop,
    barrier,
    error_along_line,
    is_stable,
    train,
    train_eval_subset,
)
from ticketlab.training.loop import Progress

POINTS = 30  # the paper's points on the line, both ends included
ONE_SEED_TOLERANCE = 0.005  # matching with one seed: at most 0.5 points below the dense
FOLDER = "instability"
CSV_COLUMNS = ("seed", "level", "density", "k", "end", "barrier", "stable", "error_start",
               "error_end", "max_error", "test_accuracy", "dense_test_accuracy",
               "matching_tolerance", "matches", "data_seed_0", "data_seed_1",
               "dense_source", "retrain_reproduces_run")
RESULT_KEYS = ("seed", "level", "k", "end", "points", "alphas", "errors", "barrier", "stable",
               "data_seeds", "density")
MATCHING_RULE = ("a ticket matches when its early-stop test accuracy (result.json) is at least "
                 "the mean early-stop test accuracy of the run's dense networks (level 0, all "
                 "finished seeds) minus one standard deviation across those seeds (sample "
                 f"std); with one seed, minus {100 * ONE_SEED_TOLERANCE:g} points")

# (description, first step, last step) -> the progress callback of one training, or None
StartTraining = Callable[[str, int, int], Progress | None]


def parse_at(items: Iterable[str | int | Step]) -> list[Step]:
    """Steps from `--at` items (`config.parse_steps`: `0,100,500,2000it` is four iteration
    counts)."""
    text = ",".join(str(i).strip() for i in items if str(i).strip())
    if not text:
        raise TicketlabError("no steps to analyse: give some, e.g. --at 0,100,500,2000it")
    return [Step.parse(s) for s in parse_steps(text)]


def analysis_dir(store: RunStore) -> Path:
    return store.root / FOLDER


def cell_dir(store: RunStore, seed: int, level: int, k: int) -> Path:
    return analysis_dir(store) / f"seed_{seed}" / f"level_{level:02d}" / f"at_{k}"


def data_seed(seed: int, k: int, copy: int) -> int:
    """The data order (and augmentation draws) of copy `copy` trained from step k: the same
    for every level, so levels differ only in their masks (common random numbers)."""
    return derive_seed(seed, "instability", k, copy)


def _run_config(store: RunStore) -> ExperimentConfig:
    science = store.config().get("science")
    if not isinstance(science, dict):
        raise DamagedFile(store.root / "config.json", "no science section",
                          "restore it, or compute the run again with ticketlab find")
    if "sparsify" in science:
        raise TicketlabError(f"{store.root} is a sparsify run: instability analyses the levels "
                             "of a `ticketlab find` run")
    return ExperimentConfig.from_science(science)


def check_request(store: RunStore, levels: Iterable[int], seeds: Iterable[int] | None
                  ) -> tuple[list[int], list[int]]:
    """(seeds, levels) to analyse, each (seed, level) ticket finished in the run (level 0 is
    needed for every seed: W_k and the dense accuracy come from it); one-line errors."""
    levels = sorted(set(levels))
    if not levels:
        raise TicketlabError("no levels to analyse: give some, e.g. --levels 0,3,7")
    if levels[0] < 0:
        raise TicketlabError(f"level {levels[0]} does not exist: levels count from 0 (dense)")
    done = {(r["seed"], r["level"]) for r in store.records() if r["variant"] == "ticket"}
    run_seeds = sorted({s for s, level in done if level == 0})
    if not run_seeds:
        raise TicketlabError(f"{store.root} has no finished dense network (level 0): finish "
                             "the run with ticketlab find first")
    seeds = run_seeds if seeds is None else sorted(set(seeds))
    if not seeds:
        raise TicketlabError("no seeds to analyse: give some, e.g. --seeds 0")
    for seed in seeds:
        if (seed, 0) not in done:
            raise TicketlabError(f"seed {seed} has no finished dense network in {store.root}: "
                                 f"choose among --seeds {','.join(map(str, run_seeds))}")
        for level in levels:
            if (seed, level) not in done:
                have = sorted(lv for s, lv in done if s == seed)
                raise TicketlabError(
                    f"level {level} of seed {seed} is not finished in {store.root}: choose "
                    f"among --levels {','.join(map(str, have))} or finish it with ticketlab "
                    "find (the run's command, with --levels)")
    return seeds, levels


def run_instability(run_dir: Path | str, levels: Iterable[int] = (0,),
                    at: Iterable[str | int | Step] = ("0it",),
                    seeds: Iterable[int] | None = None, runtime: Runtime | None = None, *,
                    points: int = POINTS, progress: StartTraining | None = None,
                    figures: bool = True) -> list[dict[str, Any]]:
    """Instability of each (seed, level, k) of a finished `find` run: one row each, in the
    order seed, level, k (see the module's docstring for what is measured and stored).

    `at`: steps (`Step` or strings like "500it", "2ep"; see `parse_at`). `seeds` None: every
    seed whose dense network is finished. `runtime`: device, data_dir (default: where `find`
    found the data), threads and checkpoint_every; None: the defaults with the thread count
    the run recorded (W_k trained again is bit-exact only with the run's device and count).
    Writes RUN_DIR/instability/ (summary over every cell computed so far, and figures
    unless `figures` is False). The caveat about masks: the module's docstring.
    """

    store = RunStore.open(Path(run_dir))
    config = _run_config(store)
    steps = parse_at(at)
    if points < 2:
        raise TicketlabError(f"points must be at least 2 (the two ends), not {points}")
    seed_list, level_list = check_request(store, levels, seeds)
    runtime = runtime or Runtime(threads=store.config().get("threads", "auto"))
    runtime.validate()
    runtime = dataclasses.replace(runtime, data_dir=runtime.data_dir or store.data_dir())
    rows = []
    with using_threads(runtime.threads) as threads:
        ctx = open_run(config, runtime, threads, driver=False, root=store.root)
        ipe = ctx.data.iterations_per_epoch(config.training.batch_size)
        ks = sorted({s.iterations(ipe) for s in steps})
        if ks[-1] >= ctx.end:
            raise TicketlabError(f"--at {ks[-1]} it is not before the end of training "
                                 f"({config.training.train} = {ctx.end} it): choose steps below "
                                 f"{ctx.end}it")
        for seed in seed_list:
            dense, sources = dense_states(ctx, seed, ks, progress)
            for level in level_list:
                for k in ks:
                    rows.append(analyse_cell(ctx, seed, level, k, dense[k], sources[k],
                                             points, progress))
    rows = add_matching(store, rows)
    every = computed_rows(store)  # this call's cells and those computed before
    write_summary(store, every)
    if figures:
        write_figures(store, every)
    return rows


# ------------------------------------------------------------------------ W_k, the dense state

def dense_states(ctx: Context, seed: int, ks: list[int], progress: StartTraining | None = None
                 ) -> tuple[dict[int, dict[str, Tensor]], dict[int, dict[str, Any]]]:
    """W_k for each k (on the run's device) and where it came from: the run's rewind
    snapshot, its init, the analysis's cache, or level 0 trained again (then cached)."""
    store, unit0 = ctx.store, Unit(seed, 0, "ticket")
    device = str(ctx.device)
    states: dict[int, dict[str, Tensor]] = {}
    sources: dict[int, dict[str, Any]] = {}
    todo = []
    for k in ks:
        path = dense_path(store, seed, k)
        if k == ctx.rewind:
            states[k] = store.load_weights(unit0, "rewind", device)
            sources[k] = {"dense_source": "rewind", "retrain_reproduces_run": None}
        elif k == 0:
            states[k] = store.load_weights(unit0, "init", device)
            sources[k] = {"dense_source": "init", "retrain_reproduces_run": None}
        elif path.is_file():
            state, meta = load_tensors(path, "weights", device)
            states[k] = state
            sources[k] = {"dense_source": "retrained",
                          "retrain_reproduces_run": _meta_bool(meta.get("reproduces_run"))}
        else:
            todo.append(k)
    if todo:
        retrained, reproduces = retrain_dense(ctx, seed, todo, progress)
        for k in todo:
            save_tensors(dense_path(store, seed, k), retrained[k], "weights",
                         {"seed": str(seed), "step": str(k), "reproduces_run": str(reproduces),
                          "threads": str(torch.get_num_threads())})
            states[k] = retrained[k]
            sources[k] = {"dense_source": "retrained", "retrain_reproduces_run": reproduces}
    return states, sources


def dense_path(store: RunStore, seed: int, k: int) -> Path:
    return analysis_dir(store) / "dense" / f"seed_{seed}" / f"at_{k}.safetensors"


def _meta_bool(text: str | None) -> bool | None:
    return {"True": True, "False": False}.get(text or "")


def retrain_dense(ctx: Context, seed: int, steps: list[int],
                  progress: StartTraining | None = None
                  ) -> tuple[dict[int, dict[str, Tensor]], bool | None]:
    """Level 0 of `seed` trained again from its initialisation, exactly as `find` trained it
    (same model seed, mask, data order), up to the last of `steps`; returns its state at
    each of `steps` and whether it passed through the run's rewind snapshot bit-exactly
    (None: it did not pass the rewind step, or that step is 0)."""
    unit0 = Unit(seed, 0, "ticket")
    end = max(steps)
    check = 0 < ctx.rewind < end
    states = replay_dense(ctx, seed, [*steps, *([ctx.rewind] if check else [])],
                          progress(f"seed {seed}: dense to {end} it", 0, end)
                          if progress else None)
    reproduces = None
    if check:
        saved = ctx.store.load_weights(unit0, "rewind", str(ctx.device))
        mine = states[ctx.rewind]
        reproduces = saved.keys() == mine.keys() and all(torch.equal(saved[n], mine[n])
                                                         for n in saved)
    return {k: states[k] for k in steps}, reproduces


# ------------------------------------------------------------------------ one (seed, level, k)

def cell_mask(ctx: Context, seed: int, level: int) -> Mask:
    if level == 0:
        return Mask.dense(ctx.new_model(0))
    return ctx.store.load_mask(Unit(seed, level, "ticket"))


def analyse_cell(ctx: Context, seed: int, level: int, k: int, w_k: dict[str, Tensor],
                 source: dict[str, Any], points: int = POINTS,
                 progress: StartTraining | None = None) -> dict[str, Any]:
    """The two copies of level `level`'s network from W_k (trained, or read back) and the
    error along the line between them; the cell's result.json (reused when present)."""
    folder = cell_dir(ctx.store, seed, level, k)
    seeds = [data_seed(seed, k, c) for c in (0, 1)]
    path = folder / "result.json"
    if path.is_file():
        result = _checked_result(path, read_json(path))
        if (result["data_seeds"] == seeds and result["end"] == ctx.end
                and result["points"] == points):
            return result
    mask = cell_mask(ctx, seed, level)
    copies, metas = [], []
    for c in (0, 1):
        state, meta = trained_copy(ctx, seed, level, k, c, mask, w_k, progress)
        copies.append(state)
        metas.append(meta)
    model = ctx.new_model(derive_seed(seed, "init"))
    data = ctx.data
    errors = error_along_line(model, copies[0], copies[1], data.x_test, data.y_test, points,
                              recompute_bn=train_eval_subset(data)[0])
    b = barrier(errors)
    result = {
        "seed": seed, "level": level, "density": mask.density(), "k": k, "end": ctx.end,
        "run_rewind": ctx.rewind, "points": points,
        "alphas": [i / (points - 1) for i in range(points)], "split": "test",
        "errors": errors, "ends": [errors[0], errors[-1]], "max_error": max(errors),
        "barrier": b, "stable": is_stable(b), "threshold": STABLE_BARRIER,
        "batch_norm_recomputed": any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                     for m in model.modules()),
        "data_seeds": seeds,
        "copy_final_test_accuracy": [_float(m.get("final_test_accuracy")) for m in metas],
        **source,
    }
    write_json(path, result)
    return result


def trained_copy(ctx: Context, seed: int, level: int, k: int, copy: int, mask: Mask,
                 w_k: dict[str, Tensor], progress: StartTraining | None = None
                 ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Copy `copy` of the cell: read back if trained, else W_k under `mask` trained from k to
    the end with its own data order (resuming from its checkpoint if one is there)."""
    folder = cell_dir(ctx.store, seed, level, k)
    path = folder / f"copy_{copy}.safetensors"
    ds = data_seed(seed, k, copy)
    device = str(ctx.device)
    if path.is_file():
        state, meta = load_tensors(path, "weights", device)
        if meta.get("data_seed") != str(ds) or meta.get("end") != str(ctx.end):
            raise DamagedFile(path, "not this analysis's copy (another data seed or budget)",
                              "delete it to train the copy again")
        return state, meta
    model = ctx.new_model(derive_seed(seed, "init"))
    model.load_state_dict(w_k)
    enforced = ctx.enforced(mask, None).to(ctx.device)
    enforced.apply_(model)
    relpath = folder.relative_to(ctx.store.root).as_posix()
    owner = {"run": ctx.store.config().get("hash"), "copy": f"{relpath}/copy_{copy}",
             "seeds": [ds]}
    checkpoint = Checkpoint(folder / f"copy_{copy}.checkpoint.pt",
                            ctx.runtime.checkpoint_every, owner,
                            "delete it to train this copy again from its start")
    description = f"seed {seed} level {level} at {k} it: copy {copy}"
    metrics = train(model, ctx.data, ctx.config.training, seed=ds, start=k, end=ctx.end,
                    eval_every=ctx.eval_every, mask=enforced, checkpoint=checkpoint,
                    progress=progress(description, k, ctx.end) if progress else None)
    state = {n: v.detach().clone() for n, v in model.state_dict().items()}
    final = EarlyStop.from_metrics(metrics).final_test_accuracy
    meta = {"seed": str(seed), "level": str(level), "k": str(k), "copy": str(copy),
            "data_seed": str(ds), "end": str(ctx.end), "final_test_accuracy": repr(final)}
    save_tensors(path, state, "weights", meta)
    checkpoint.clear()
    return state, meta


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "None") else None
    except ValueError:
        return None


def _checked_result(path: Path, result: Any) -> dict[str, Any]:
    if not isinstance(result, dict) or any(key not in result for key in RESULT_KEYS):
        raise DamagedFile(path, "not an instability result", "delete it to compute it again "
                          "(its trained copies are kept)")
    return result


# ------------------------------------------------------------------------ matching, summary

def add_matching(store: RunStore, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its unit's early-stop test accuracy and, for tickets, whether it
    matches the dense network (`MATCHING_RULE`)."""
    records = store.records()
    dense = [r["early_stop_test_accuracy"] for r in records
             if r["level"] == 0 and r["variant"] == "ticket"
             and r["early_stop_test_accuracy"] is not None]
    mean = statistics.fmean(dense) if dense else None
    tolerance = statistics.stdev(dense) if len(dense) > 1 else ONE_SEED_TOLERANCE
    accuracy = {(r["seed"], r["level"]): r["early_stop_test_accuracy"]
                for r in records if r["variant"] == "ticket"}
    out = []
    for row in rows:
        acc = accuracy.get((row["seed"], row["level"]))
        matches = (None if row["level"] == 0 or acc is None or mean is None
                   else acc >= mean - tolerance)
        out.append({**row, "test_accuracy": acc, "dense_test_accuracy": mean,
                    "matching_tolerance": tolerance, "matches": matches})
    return out


def computed_rows(store: RunStore) -> list[dict[str, Any]]:
    """Every cell computed so far under RUN_DIR/instability, with matching, by seed, level, k."""
    rows = []
    for path in analysis_dir(store).glob("seed_*/level_*/at_*/result.json"):
        rows.append(_checked_result(path, read_json(path)))
    rows.sort(key=lambda r: (r["seed"], r["level"], r["k"]))
    return add_matching(store, rows)


def write_summary(store: RunStore, rows: list[dict[str, Any]] | None = None) -> list[Path]:
    """instability.json (every row, with the errors along the line) and instability.csv
    (the scalar columns), written atomically. `rows`: `computed_rows(store)`, if at hand."""
    rows = computed_rows(store) if rows is None else rows
    folder = analysis_dir(store)
    write_json(folder / "instability.json", {
        "run": store.root.name, "points": "evenly spaced, both ends included",
        "split": "test", "stable_barrier": STABLE_BARRIER, "matching_rule": MATCHING_RULE,
        "mask_caveat": "each level's mask is the run's (found with its --rewind), not one "
                       "found by IMP rewound to each k as in the paper", "rows": rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "error_start": r["errors"][0], "error_end": r["errors"][-1],
                         "max_error": max(r["errors"]), "data_seed_0": r["data_seeds"][0],
                         "data_seed_1": r["data_seeds"][1]})
    atomic_write_text(folder / "instability.csv", buf.getvalue())
    return [folder / "instability.json", folder / "instability.csv"]


def write_figures(store: RunStore, rows: list[dict[str, Any]] | None = None) -> list[Path]:
    """The figures of every cell computed so far (`report.instability`); `rows` as for
    `write_summary`."""
    from ticketlab.report.instability import barrier_figure, line_figure, matching_figure
    from ticketlab.report.plots import save_figure

    rows = computed_rows(store) if rows is None else rows
    folder = analysis_dir(store)
    written = []
    for name, make in (("line", line_figure), ("barrier", barrier_figure),
                       ("matching", matching_figure)):
        fig = make(rows)
        if fig is not None:
            save_figure(fig, folder / f"instability_{name}")
            written += [folder / f"instability_{name}.png", folder / f"instability_{name}.svg"]
    return written
