"""The run directory: what a run computed, laid out so it resumes and reports from disk.

    <out>/imp_<model>_<dataset>_<hash>/
      config.json                      the resolved configuration and its hash
      summary.json                     one record per (seed, level, variant) computed
      seed_<s>/level_<LL>/<variant>/   variant: ticket, reinit or random
        mask.safetensors               the mask this unit trained under
        rewind.safetensors             its starting weights: the rewind point under the mask
        final.safetensors              its weights at the end of training
        metrics.csv                    iteration, split (val, test, train), loss, accuracy
        result.json                    its record; written last, it marks the unit done
        checkpoint.pt                  only while the unit trains (resume point)
      seed_<s>/level_00/ticket/init.safetensors   the weights at step 0

Every file is written atomically, so a killed run leaves complete files or none, and a unit
is done exactly when its result.json exists.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab import __version__
from ticketlab.config import ExperimentConfig
from ticketlab.errors import TicketlabError
from ticketlab.io import (
    atomic_write_bytes,
    atomic_write_text,
    load_state,
    read_json,
    save_state,
    write_json,
)
from ticketlab.pruning.mask import Mask
from ticketlab.training.loop import Checkpoint, Eval

VARIANTS = ("ticket", "reinit", "random", "reshuffle", "signed_constant",
            "random_signed_constant", "freeze_init", "freeze_init_zero_mask")
# Records written before training accuracy and divergence were recorded lack the four keys
# early_stop_train_accuracy..diverged_iteration: readers use .get().
RECORD_KEYS = ("seed", "level", "variant", "density", "model_density", "early_stop_iteration",
               "early_stop_val_loss", "early_stop_test_accuracy", "final_test_accuracy",
               "early_stop_train_accuracy", "final_train_accuracy", "diverged",
               "diverged_iteration", "start_iteration", "end_iteration")


@dataclass(frozen=True)
class Unit:
    seed: int
    level: int
    variant: str

    def relpath(self) -> str:
        return f"seed_{self.seed}/level_{self.level:02d}/{self.variant}"


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def create(cls, out: Path, config: ExperimentConfig, command: str | None = None
               ) -> RunStore:
        """Opens (or starts) the run directory of `config`, recording the configuration and
        the commands that worked on it."""
        store = cls(Path(out) / config.run_name())
        path = store.root / "config.json"
        commands: list[str] = []
        if path.exists():
            old = read_json(path)
            if old.get("science") != config.science():
                raise TicketlabError(
                    f"{path} does not match this configuration: move that directory away"
                )
            commands = old.get("commands", [])
        if command and command not in commands:
            commands.append(command)
        write_json(path, {
            "ticketlab_version": __version__,
            "hash": config.run_hash(),
            "science": config.science(),
            "requested": {k: config.to_dict()[k] for k in config.UNHASHED},
            "commands": commands,
        })
        return store

    @classmethod
    def open(cls, root: Path) -> RunStore:
        store = cls(root)
        if not (store.root / "config.json").is_file():
            raise TicketlabError(
                f"{root} is not a ticketlab run directory (no config.json): give the directory "
                "that `ticketlab find` printed"
            )
        return store

    def config(self) -> dict[str, Any]:
        return read_json(self.root / "config.json")

    # ------------------------------------------------------------------ units

    def dir(self, unit: Unit) -> Path:
        return self.root / unit.relpath()

    def done(self, unit: Unit) -> bool:
        return (self.dir(unit) / "result.json").is_file()

    def checkpoint(self, unit: Unit, every: float) -> Checkpoint:
        return Checkpoint(self.dir(unit) / "checkpoint.pt", every)

    def save_mask(self, unit: Unit, mask: Mask) -> None:
        mask.save(self.dir(unit) / "mask.safetensors")

    def load_mask(self, unit: Unit) -> Mask:
        return Mask.load(self.dir(unit) / "mask.safetensors")

    def save_weights(self, unit: Unit, kind: str, state: dict[str, torch.Tensor]) -> None:
        save_state(self.dir(unit) / f"{kind}.safetensors", state)

    def load_weights(self, unit: Unit, kind: str, device: str = "cpu") -> dict[str, torch.Tensor]:
        return load_state(self.dir(unit) / f"{kind}.safetensors", device)

    def finish(self, unit: Unit, metrics: list[Eval], record: dict[str, Any]) -> None:
        """Writes the unit's metrics, then its record: from here on it is done."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["iteration", "split", "loss", "accuracy"])
        for e in metrics:
            writer.writerow([e.iteration, e.split, repr(e.loss), repr(e.accuracy)])
        atomic_write_text(self.dir(unit) / "metrics.csv", buf.getvalue())
        write_json(self.dir(unit) / "result.json", {k: record[k] for k in RECORD_KEYS})
        self.checkpoint(unit, 0).clear()

    def adopt(self, unit: Unit, other: RunStore) -> None:
        """Copies a finished unit from another run (its result.json last: done only then)."""
        files = sorted(other.dir(unit).iterdir(), key=lambda p: p.name == "result.json")
        for path in files:
            if path.is_file() and path.name != "checkpoint.pt" and not path.name.startswith("."):
                atomic_write_bytes(self.dir(unit) / path.name, path.read_bytes())

    def siblings(self, dense_science: dict[str, Any]) -> list[RunStore]:
        """Other runs beside this one whose dense training (level 0) is the same as ours."""
        found = []
        for path in sorted(self.root.parent.glob("*/config.json")):
            if path.parent == self.root:
                continue
            try:
                science = read_json(path)["science"]
                config = ExperimentConfig.from_science(science)
            except (TicketlabError, KeyError, TypeError):
                continue  # not a run we can read: never borrow from it
            if config.dense_science() == dense_science:
                found.append(RunStore(path.parent))
        return found

    def result(self, unit: Unit) -> dict[str, Any]:
        return read_json(self.dir(unit) / "result.json")

    def metrics(self, unit: Unit) -> list[Eval]:
        path = self.dir(unit) / "metrics.csv"
        with open(path, newline="") as f:
            return [Eval(int(r["iteration"]), r["split"], float(r["loss"]), float(r["accuracy"]))
                    for r in csv.DictReader(f)]

    # ------------------------------------------------------------------ summary

    def records(self) -> list[dict[str, Any]]:
        """Every finished unit's record, by level, seed and variant."""
        records = [read_json(p) for p in self.root.glob("seed_*/level_*/*/result.json")]
        def order(variant: str) -> tuple[int, str]:  # the core's variants first, then by name
            return (VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS), variant)
        return sorted(records, key=lambda r: (r["level"], r["seed"], order(r["variant"])))

    def write_summary(self) -> dict[str, Any]:
        summary = {"run": self.root.name, "hash": self.config()["hash"],
                   "records": self.records()}
        write_json(self.root / "summary.json", summary)
        return summary

    def summary(self) -> dict[str, Any]:
        path = self.root / "summary.json"
        return read_json(path) if path.exists() else self.write_summary()
