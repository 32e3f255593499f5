"""The run directory: what a run computed, laid out so it resumes and reports from disk.

    <out>/imp_<model>_<dataset>_<hash>/
      config.json                      the resolved configuration and its hash
      summary.json                     one record per (seed, level, variant) computed
      seed_<s>/level_<LL>/<variant>/   variant: ticket, reinit or random
        mask.safetensors               the mask this unit trained under
        rewind.safetensors             its starting weights: the rewind point under the mask
        final.safetensors              its weights at the end of training
        metrics.csv                    iteration, split, loss, accuracy
        result.json                    its record; written last, it marks the unit done
        checkpoint.pt                  only while the unit trains (resume point)
      seed_<s>/level_00/ticket/init.safetensors   the weights at step 0

Every file is written atomically, so a killed run leaves complete files or none, and a unit
is done exactly when its result.json exists.

Damaged files are caught where they are read: each tensor file carries its checksum and kind
(see `ticketlab.io`), result.json lists the checksums of its unit's tensor files (under
"files", so a file swapped in from another unit is caught too), checkpoint.pt names its
unit, and records and metrics are checked for their keys and columns. The message names
the unit's folder to delete, or `--recompute` (`damage` and `remove` do it for `find`).
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab import __version__
from ticketlab.config import ExperimentConfig
from ticketlab.errors import DamagedFile, TicketlabError
from ticketlab.io import (
    READ_ONLY,
    WriteError,
    atomic_write_bytes,
    atomic_write_text,
    file_digest,
    load_state,
    read_json,
    save_state,
    write_json,
)
from ticketlab.pruning.mask import Mask
from ticketlab.training.loop import Checkpoint, Eval

VARIANTS = ("ticket", "reinit", "random", "reshuffle", "signed_constant",
            "random_signed_constant", "freeze_init", "freeze_init_zero_mask")
RECORD_KEYS = ("seed", "level", "variant", "density", "model_density", "early_stop_iteration",
               "early_stop_val_loss", "early_stop_test_accuracy", "final_test_accuracy",
               "start_iteration", "end_iteration")
# What every result.json has had since 0.1: a record lacking one of these is damaged. (Keys
# added later may be absent from older records; readers must tolerate that.)
REQUIRED_KEYS = ("seed", "level", "variant", "density", "model_density",
                 "early_stop_iteration", "early_stop_val_loss", "early_stop_test_accuracy",
                 "final_test_accuracy", "start_iteration", "end_iteration")
METRICS_COLUMNS = ("iteration", "split", "loss", "accuracy")
TENSOR_FILES = {"mask.safetensors": "mask", "init.safetensors": "weights",
                "rewind.safetensors": "weights", "final.safetensors": "weights"}


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
        if Path(out).exists() and not Path(out).is_dir():
            raise TicketlabError(f"--out {out} is a file, not a directory: give a directory "
                                 "(it is created if missing)")
        store = cls(Path(out) / config.run_name())
        path = store.root / "config.json"
        commands: list[str] = []
        old = None
        if path.exists():
            old = read_json(path)
            if old.get("science") != config.science():
                raise TicketlabError(
                    f"{path} does not match this configuration: move that directory away"
                )
            commands = list(old.get("commands", []))
        if command and command not in commands:
            commands.append(command)
        new = {
            "ticketlab_version": __version__,
            "hash": config.run_hash(),
            "science": config.science(),
            "requested": {k: config.to_dict()[k] for k in config.UNHASHED},
            "commands": commands,
        }
        if old == new:
            return store  # nothing new to record: a finished run on read-only media just reads
        try:
            write_json(path, new)
        except WriteError as e:
            if old is None or e.errno not in READ_ONLY:
                raise
            # only bookkeeping was new: a finished run on read-only media still prints
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

    # ------------------------------------------------------------------ damage

    def advice(self, unit: Unit) -> str:
        """How to get rid of a damaged file of `unit`: both ways lead to a recomputation."""
        return (f"delete the folder {unit.relpath()} of run {self.root} and run the command "
                "that made the run again, or run that command with --recompute")

    def _damaged(self, unit: Unit, e: DamagedFile) -> DamagedFile:
        return DamagedFile(e.path, e.reason, self.advice(unit))

    def damage(self, unit: Unit) -> DamagedFile | None:
        """The first damaged file of `unit` (a done unit: all of them; else its checkpoint)."""
        try:
            if not self.done(unit):
                self.checkpoint(unit, 0).load()
                return None
            self.result(unit)
            self.metrics(unit)
            for name, kind in TENSOR_FILES.items():
                if (self.dir(unit) / name).is_file():
                    if kind == "mask":
                        self.load_mask(unit)
                    else:
                        self.load_weights(unit, name.split(".")[0])
        except DamagedFile as e:
            return e
        return None

    def remove(self, unit: Unit) -> None:
        """Deletes a unit's folder (`--recompute`): it is computed again from scratch."""
        try:
            shutil.rmtree(self.dir(unit), ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise TicketlabError(f"cannot delete {self.dir(unit)} ({e.strerror}): delete it "
                                 "by hand") from None

    # ------------------------------------------------------------------ units

    def dir(self, unit: Unit) -> Path:
        return self.root / unit.relpath()

    def done(self, unit: Unit) -> bool:
        return (self.dir(unit) / "result.json").is_file()

    def checkpoint(self, unit: Unit, every: float) -> Checkpoint:
        owner = {"run": self.config().get("hash"), "unit": unit.relpath(), "seeds": [unit.seed]}
        return Checkpoint(self.dir(unit) / "checkpoint.pt", every, owner, self.advice(unit))

    def save_mask(self, unit: Unit, mask: Mask) -> None:
        mask.save(self.dir(unit) / "mask.safetensors")

    def load_mask(self, unit: Unit) -> Mask:
        path = self.dir(unit) / "mask.safetensors"
        try:
            mask = Mask.load(path)
            self._check_recorded(unit, path, mask)
        except DamagedFile as e:
            raise self._damaged(unit, e) from None
        return mask

    def save_weights(self, unit: Unit, kind: str, state: dict[str, torch.Tensor]) -> None:
        save_state(self.dir(unit) / f"{kind}.safetensors", state)

    def load_weights(self, unit: Unit, kind: str, device: str = "cpu") -> dict[str, torch.Tensor]:
        path = self.dir(unit) / f"{kind}.safetensors"
        try:
            state = load_state(path, device)
            self._check_recorded(unit, path, state)
        except DamagedFile as e:
            raise self._damaged(unit, e) from None
        return state

    def _check_recorded(self, unit: Unit, path: Path, tensors: Any) -> None:
        """A done unit's tensors must be the ones its result.json lists (if it lists any)."""
        from ticketlab.io import tensor_digest
        if not self.done(unit):
            return
        expected = self.result(unit).get("files", {}).get(path.name)
        if expected is not None and tensor_digest(dict(tensors)) != expected:
            raise DamagedFile(path, "not the file this unit wrote: its checksum differs from "
                              "the one in result.json")

    def finish(self, unit: Unit, metrics: list[Eval], record: dict[str, Any]) -> None:
        """Writes the unit's metrics, then its record: from here on it is done."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(METRICS_COLUMNS)
        for e in metrics:
            writer.writerow([e.iteration, e.split, repr(e.loss), repr(e.accuracy)])
        atomic_write_text(self.dir(unit) / "metrics.csv", buf.getvalue())
        files = {name: file_digest(self.dir(unit) / name) for name in TENSOR_FILES
                 if (self.dir(unit) / name).is_file()}
        write_json(self.dir(unit) / "result.json",
                   {**{k: record[k] for k in RECORD_KEYS},
                    "files": {k: v for k, v in files.items() if v}})
        self.checkpoint(unit, 0).clear()

    def adopt(self, unit: Unit, other: RunStore) -> bool:
        """Copies a finished unit from another run (its result.json last: done only then).

        A damaged donor is not copied (returns False): the unit is then trained here.
        """
        if other.damage(unit) is not None:
            return False
        files = sorted(other.dir(unit).iterdir(), key=lambda p: p.name == "result.json")
        for path in files:
            if path.is_file() and path.name != "checkpoint.pt" and not path.name.startswith("."):
                atomic_write_bytes(self.dir(unit) / path.name, path.read_bytes())
        return True

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
        path = self.dir(unit) / "result.json"
        try:
            return _checked_record(path, read_json(path))
        except DamagedFile as e:
            raise self._damaged(unit, e) from None

    def metrics(self, unit: Unit) -> list[Eval]:
        path = self.dir(unit) / "metrics.csv"
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                missing = [c for c in METRICS_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise DamagedFile(path, f"no column {', '.join(missing)}")
                return [Eval(int(r["iteration"]), r["split"], float(r["loss"]),
                             float(r["accuracy"])) for r in reader]
        except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
            raise self._damaged(unit, DamagedFile(path, f"unreadable row: {e}")) from None
        except DamagedFile as e:
            raise self._damaged(unit, e) from None
        except FileNotFoundError:
            raise self._damaged(unit, DamagedFile(path, "missing")) from None

    # ------------------------------------------------------------------ summary

    def records(self) -> list[dict[str, Any]]:
        """Every finished unit's record, by level, seed and variant."""
        records = []
        for path in self.root.glob("seed_*/level_*/*/result.json"):
            folder = path.parent.relative_to(self.root).as_posix()
            try:
                record = _checked_record(path, read_json(path))
            except DamagedFile as e:
                raise DamagedFile(e.path, e.reason, self.advice(_unit_of(folder))) from None
            records.append({k: v for k, v in record.items() if k != "files"})
        def order(variant: str) -> tuple[int, str]:  # the core's variants first, then by name
            return (VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS), variant)
        return sorted(records, key=lambda r: (r["level"], r["seed"], order(r["variant"])))

    def write_summary(self) -> dict[str, Any]:
        summary = {"run": self.root.name, "hash": self.config()["hash"],
                   "records": self.records()}
        path = self.root / "summary.json"
        try:
            if path.is_file() and read_json(path) == summary:
                return summary  # up to date: a finished run on read-only media needs no write
        except TicketlabError:
            pass  # a damaged summary is rewritten
        write_json(path, summary)
        return summary

    def summary(self) -> dict[str, Any]:
        path = self.root / "summary.json"
        return read_json(path) if path.exists() else self.write_summary()


def _checked_record(path: Path, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DamagedFile(path, "not a record")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise DamagedFile(path, f"no {', '.join(missing)}")
    if not isinstance(record.get("files", {}), dict):
        raise DamagedFile(path, "bad files entry")
    return record


def _unit_of(folder: str) -> Unit:
    """'seed_0/level_02/ticket' -> Unit(0, 2, 'ticket')."""
    seed, level, variant = folder.split("/")
    return Unit(int(seed.removeprefix("seed_")), int(level.removeprefix("level_")), variant)

