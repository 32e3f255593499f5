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
        timing.json                    seconds it took, where and how (not part of the record)
        checkpoint.pt                  only while the unit trains (resume point)
        .lock                          held (flock) by the process training the unit
      seed_<s>/level_00/ticket/init.safetensors   the weights at step 0
      checkpoints/level_<LL>_<group>.{pt,json}    units trained together: resume point, members

Every file is written atomically, so a killed run leaves complete files or none, and a unit
is done exactly when its result.json exists. Several processes may work on one run: each
unit is trained by the one process that holds its lock, and the OS releases a lock when its
process dies, so a killed process never blocks the run.

Damaged files are caught where they are read: each tensor file carries its checksum and kind
(see `ticketlab.io`), result.json lists the checksums of its unit's tensor files (under
"files", so a file swapped in from another unit is caught too), checkpoint.pt names its
unit, and records and metrics are checked for their keys and columns. The message names
the unit's folder to delete, or `--recompute` (`damage` and `remove` do it for `find`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ticketlab import __version__
from ticketlab.config import ExperimentConfig
from ticketlab.errors import DamagedFile, TicketlabError
from ticketlab.experiments.locks import UnitLock, shared_lock
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
# Records written before training accuracy and divergence were recorded lack the four keys
# early_stop_train_accuracy..diverged_iteration: readers use .get().
RECORD_KEYS = ("seed", "level", "variant", "density", "model_density", "early_stop_iteration",
               "early_stop_val_loss", "early_stop_test_accuracy", "final_test_accuracy",
               "early_stop_train_accuracy", "final_train_accuracy", "diverged",
               "diverged_iteration", "start_iteration", "end_iteration")
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
    def create(cls, out: Path, config: ExperimentConfig, command: str | None = None,
               threads: int | None = None) -> RunStore:
        """Opens (or starts) the run directory of `config`, recording the configuration,
        the commands that worked on it and the intra-op thread count of the latest one
        (outside the hash: it may change a result's last bits, never what it means)."""
        if Path(out).exists() and not Path(out).is_dir():
            raise TicketlabError(f"--out {out} is a file, not a directory: give a directory "
                                 "(it is created if missing)")
        store = cls(Path(out) / config.run_name())
        path = store.root / "config.json"
        commands: list[str] = []
        old: dict[str, Any] = {}
        if path.exists():
            old = read_json(path)
            if old.get("science") != config.science():
                raise TicketlabError(
                    f"{path} does not match this configuration: move that directory away"
                )
            commands = list(old.get("commands", []))
        if command and command not in commands:
            commands.append(command)
        record = {
            "ticketlab_version": __version__,
            "hash": config.run_hash(),
            "science": config.science(),
            "requested": {k: config.to_dict()[k] for k in config.UNHASHED},
            "commands": commands,
        }
        if "data_dir" in old:  # kept: see `record_data_dir`
            record["data_dir"] = old["data_dir"]
        threads = old.get("threads") if threads is None else threads
        if threads is not None:  # runs made before the count was recorded lack it
            record["threads"] = threads
        if old == record:
            return store  # nothing new to record: a finished run on read-only media just reads
        try:
            write_json(path, record)
        except WriteError as e:
            if not old or e.errno not in READ_ONLY:
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

    def save_timing(self, unit: Unit, seconds: float, iterations: int) -> None:
        """How long the unit's training took (its share of a group's): the plan's ETAs come
        from these. Outside result.json, which must not depend on the machine."""
        write_json(self.dir(unit) / "timing.json", {
            "seconds": round(seconds, 3), "iterations": iterations,
            "threads": torch.get_num_threads(), "host": socket.gethostname()})

    def timing(self, unit: Unit) -> dict[str, Any] | None:
        """The unit's timing.json; None if absent (units of older runs) or unreadable."""
        path = self.dir(unit) / "timing.json"
        try:
            t = read_json(path) if path.is_file() else None
        except TicketlabError:
            return None
        ok = isinstance(t, dict) and all(isinstance(t.get(k), int | float)
                                         for k in ("seconds", "iterations"))
        return t if ok else None

    def timings(self) -> dict[Unit, dict[str, Any]]:
        """The timing.json of every unit that has a readable one, by unit (a level's rate
        depends on its density when sparse kernels train it)."""
        units = (_unit(path.parent.relative_to(self.root).as_posix())
                 for path in self.root.glob("seed_*/level_*/*/timing.json"))
        return {u: t for u in units if (t := self.timing(u)) is not None}

    def contents(self) -> dict[str, object]:
        """Every unit's numbers, to compare runs computed in different ways: records and
        metrics as bytes, each tensor file as its metadata and its tensors' bytes (safetensors
        writes metadata keys in a random order per process, so whole files differ)."""
        from safetensors import safe_open

        def content(path: Path) -> object:
            if path.suffix != ".safetensors":
                return path.read_bytes()
            with safe_open(str(path), "pt") as f:
                return f.metadata(), {k: f.get_tensor(k).numpy().tobytes() for k in f.keys()}  # noqa: SIM118
        return {str(p.relative_to(self.root)): content(p)
                for p in sorted(self.root.glob("seed_*/**/*"))
                if p.name in ("result.json", "metrics.csv", *TENSOR_FILES)}

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
        write_json(self.dir(unit) / "result.json",  # the common keys, then a kind's own
                   {**{k: record[k] for k in RECORD_KEYS},
                    **{k: v for k, v in record.items() if k not in RECORD_KEYS},
                    "files": {k: v for k, v in files.items() if v}})
        self.checkpoint(unit, 0).clear()

    def adopt(self, unit: Unit, other: RunStore,
              weights: dict[str, dict[str, torch.Tensor]] | None = None) -> bool:
        """Copies a finished unit from another run (its result.json last: done only then).

        `weights` replaces the donor's weight files of those kinds (a level 0 borrowed by a run
        with another rewind point brings its own snapshot); result.json then records their
        digests. A damaged donor is not copied (returns False): the unit is then trained here.
        """
        if other.damage(unit) is not None:
            return False
        weights = weights or {}
        own = {f"{kind}.safetensors" for kind in weights}
        for path in sorted(other.dir(unit).iterdir()):
            if (path.is_file() and path.name not in ("checkpoint.pt", "result.json", *own)
                    and not path.name.startswith(".")):
                atomic_write_bytes(self.dir(unit) / path.name, path.read_bytes())
        for kind, state in weights.items():
            self.save_weights(unit, kind, state)
        record = read_json(other.dir(unit) / "result.json")
        if own:
            record["files"] = {**record.get("files", {}),
                               **{name: file_digest(self.dir(unit) / name) for name in own}}
        write_json(self.dir(unit) / "result.json", record)
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
                raise DamagedFile(e.path, e.reason, self.advice(_unit(folder))) from None
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
        """Rebuilt from the units' records, never read from summary.json: a process killed
        between a unit's result.json and the summary update leaves that file behind."""
        return {"run": self.root.name, "hash": self.config()["hash"], "records": self.records()}

    # ------------------------------------------------------------------ data source

    def record_data_dir(self, data_dir: Path) -> None:
        """Notes in config.json (outside the hash) where `find` found the dataset, so the
        commands that read the run find it without --data-dir; writes only on a change."""
        config = self.config()
        value = str(Path(data_dir).expanduser().resolve())
        if config.get("data_dir") != value:
            write_json(self.root / "config.json", {**config, "data_dir": value})

    def record(self, key: str, value: Any) -> None:
        """Notes `key` in config.json, outside the hash (how the run was computed, not what
        it computes); writes only on a change."""
        config = self.config()
        if config.get(key) != value:
            write_json(self.root / "config.json", {**config, key: value})

    def data_dir(self) -> Path | None:
        """The dataset folder `find` used (None for runs made before it was recorded, or if
        that folder is gone)."""
        value = self.config().get("data_dir")
        return Path(value) if value and Path(value).is_dir() else None

    # ------------------------------------------------------------------ concurrency

    def try_lock(self, unit: Unit) -> UnitLock | None:
        """The unit's lock if no other process holds it (None otherwise); never waits."""
        return UnitLock.take(self.dir(unit) / ".lock")

    def group(self, units: list[Unit], every: float = 60.0) -> tuple[Checkpoint, Path]:
        """The resume point of units trained together, and the file naming its members
        (the checkpoint's name is that of runs made before the members were recorded)."""
        names = ",".join(u.relpath() for u in units)
        stem = f"level_{units[0].level:02d}_{hashlib.sha256(names.encode()).hexdigest()[:8]}"
        folder = self.root / "checkpoints"
        owner = {"run": self.config().get("hash"), "units": names}
        advice = f"delete {folder / stem}.pt to restart these units' training"
        return Checkpoint(folder / f"{stem}.pt", every, owner, advice), folder / f"{stem}.json"

    def write_group(self, units: list[Unit]) -> None:
        write_json(self.group(units)[1], {"units": [u.relpath() for u in units]})

    def clear_group(self, units: list[Unit]) -> None:
        checkpoint, members = self.group(units)
        checkpoint.clear()
        members.unlink(missing_ok=True)

    def groups(self, level: int) -> list[list[Unit]]:
        """The groups of a level whose joint training started and did not end: a resumed
        group trains as the same group, so its numbers are those of an uninterrupted run."""
        found = []
        for path in sorted((self.root / "checkpoints").glob(f"level_{level:02d}_*.json")):
            with suppress(TicketlabError, KeyError, TypeError, ValueError):
                found.append([_unit(name) for name in read_json(path)["units"]])
        return found

    @contextmanager
    def session(self) -> Iterator[None]:
        """Held while a process works on the run (a shared lock). The process alone on it
        when it starts or ends cleans up what killed processes left behind."""
        lock = UnitLock.take(self.root / ".lock")
        if lock is None:  # others work on it: join them
            lock = shared_lock(self.root / ".lock")
        elif lock.fd is not None:
            self.clean_up()
        lock.convert(shared=True, wait=True)
        try:
            yield
        finally:
            if lock.fd is not None and lock.convert(shared=False):
                self.clean_up()
            lock.release()

    def clean_up(self, min_age: float = 60.0) -> None:
        """Removes temporary files of interrupted atomic writes (older than `min_age`
        seconds: a command that reads the run may be writing one) and resume points no
        training will use again (their units are done)."""
        now = time.time()
        stale = [p for p in self.root.rglob(".*.tmp") if _age(p, now) >= min_age]
        stale += [p for p in self.root.glob("seed_*/level_*/*/checkpoint.pt")
                  if (p.parent / "result.json").is_file()]
        folder = self.root / "checkpoints"
        for stem in sorted({p.stem for p in folder.glob("level_*_*.pt")}
                           | {p.stem for p in folder.glob("level_*_*.json")}):
            if self._group_over(folder / f"{stem}.json"):
                stale += [folder / f"{stem}.pt", folder / f"{stem}.json"]
        for path in stale:
            with suppress(OSError):
                path.unlink(missing_ok=True)

    def _group_over(self, members: Path) -> bool:
        """Whether every unit of a group is done (its checkpoint will never be read)."""
        if members.is_file():
            try:
                return all(self.done(_unit(name)) for name in read_json(members)["units"])
            except (TicketlabError, KeyError, TypeError, ValueError):
                return False  # unreadable: leave it to the user
        # written before groups named their members: every unit trained together had its
        # folder made before training, so the group is over when all of the level's are done
        level = members.stem.split("_")[1]
        return all((f / "result.json").is_file()
                   for f in self.root.glob(f"seed_*/level_{level}/*"))


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def _unit(relpath: str) -> Unit:
    seed, level, variant = relpath.split("/")
    return Unit(int(seed.removeprefix("seed_")), int(level.removeprefix("level_")), variant)


def _checked_record(path: Path, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DamagedFile(path, "not a record")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise DamagedFile(path, f"no {', '.join(missing)}")
    if not isinstance(record.get("files", {}), dict):
        raise DamagedFile(path, "bad files entry")
    return record
