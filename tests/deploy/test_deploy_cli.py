"""`ticketlab export --format compact|onnx` and `ticketlab bench` on tiny finished runs."""

import importlib.util
import json

import pytest
import torch

from tests.conftest import tiny_config
from tests.deploy.test_sparse import ATOL
from tests.test_cli import cli
from ticketlab.config import Runtime
from ticketlab.deploy.artifact import load_export
from ticketlab.deploy.onnx import onnx_session
from ticketlab.experiments.export import load_ticket
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore

needs_deploy = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch_pruning", "onnxruntime")),
    reason="the deploy extra: pip install -e '.[deploy]'")


def finished(tmp_path_factory, **overrides) -> RunStore:
    out = tmp_path_factory.mktemp("runs")
    config = tiny_config(levels=2, train="40it", controls=(), **overrides)
    run_imp(config, Runtime(out=out, device="cpu", quiet=True))
    return RunStore(out / config.run_name())


@pytest.fixture(scope="module")
def by_rows(tmp_path_factory):
    return finished(tmp_path_factory, granularity="row")


@pytest.fixture(scope="module")
def by_weights(tmp_path_factory):
    return finished(tmp_path_factory)


def masked(run: RunStore, level: int) -> torch.nn.Module:
    t = load_ticket(run.root, level=level, device="cpu")
    return t.mask.apply_(t.model).eval()


@needs_deploy
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_compact_export_of_a_structured_run_is_smaller_and_equal(by_rows, tmp_path, capsys):
    path = tmp_path / "c.safetensors"
    code, out, err = cli(capsys, "export", str(by_rows.root), "--format", "compact",
                         "--out", str(path))
    assert code == 0, err
    assert "removed" in out and "fc1" in out
    loaded = load_export(path)
    assert loaded.fc1.out_features < 300  # whole neurons gone, not zeroed
    x = torch.rand(32, 1, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), masked(by_rows, 2)(x), atol=ATOL, rtol=0)
        twin = torch.jit.load(str(path.with_suffix(".pt")))
        assert torch.allclose(twin(x), loaded(x), atol=ATOL, rtol=0)


@needs_deploy
def test_onnx_export_of_a_structured_run_runs_in_onnxruntime(by_rows, tmp_path, capsys):
    path = tmp_path / "c.onnx"
    code, _, err = cli(capsys, "export", str(by_rows.root), "--format", "onnx", "--out",
                       str(path), "--round-to", "8", "--quiet")
    assert code == 0, err
    x = torch.rand(5, 1, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(onnx_session(path)(x), masked(by_rows, 2)(x), atol=1e-4, rtol=0)


def test_an_unstructured_ticket_is_refused_as_compact(by_weights, tmp_path, capsys):
    for fmt in ("compact", "onnx"):
        code, _, err = cli(capsys, "export", str(by_weights.root), "--format", fmt, "--out",
                           str(tmp_path / f"x.{fmt}"), "--quiet")
        assert code == 2 and "--format sparse" in err and len(err.strip().splitlines()) == 1
        assert not list(tmp_path.iterdir())


@needs_deploy
def test_bench_a_run_and_an_export_file(by_rows, tmp_path, capsys):
    code, out, err = cli(capsys, "bench", str(by_rows.root), "--batch-sizes", "1,4",
                         "--min-seconds", "0.01", "--quiet", "--json", str(tmp_path / "b.json"))
    assert code == 0, err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    models = {r["model"] for r in rows}
    assert {"dense", "sparse", "compact", "onnx", "dense onnx"} <= models
    assert {r["batch"] for r in rows} == {1, 4} and "speed-up" in out
    assert all(r["speedup"] == 1.0 for r in rows if r["model"] == "dense")
    path = tmp_path / "c.safetensors"
    assert cli(capsys, "export", str(by_rows.root), "--format", "compact", "--out", str(path),
               "--quiet")[0] == 0
    code, out, err = cli(capsys, "bench", str(path), "--batch-sizes", "2",
                         "--min-seconds", "0.01", "--quiet")
    assert code == 0, err
    assert "c.safetensors" in out and "dense" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--formats", "zip"], "unknown export format 'zip'"),
    (["--formats", "compact"], "--format sparse"),  # asked for by name: refused, not skipped
    (["--batch-sizes", "0"], "batch sizes must be whole numbers >= 1"),
    (["--min-seconds", "0"], "--min-seconds must be > 0"),
])
def test_bench_errors(by_weights, capsys, argv, needle):
    code, _, err = cli(capsys, "bench", str(by_weights.root), "--quiet", *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_bench_a_missing_or_foreign_target(tmp_path, capsys):
    code, _, err = cli(capsys, "bench", str(tmp_path / "nothing"), "--quiet")
    assert code == 2 and "neither a run directory nor an export file" in err
    (tmp_path / "t.onnx").write_bytes(b"onnx")
    code, _, err = cli(capsys, "bench", str(tmp_path / "t.onnx"), "--quiet")
    assert code == 2 and "bench the run it came from" in err
    (tmp_path / "t.safetensors").write_bytes(b"not safetensors")
    code, _, err = cli(capsys, "bench", str(tmp_path / "t.safetensors"), "--quiet")
    assert code == 2 and "export the ticket again" in err
    assert len(err.strip().splitlines()) == 1
