"""`export` and its files: verified on real inputs, loadable by ticketlab and by torch alone."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.conftest import tiny_config
from tests.deploy.test_sparse import ATOL, lenet_ticket
from tests.test_cli import cli
from ticketlab.config import Runtime
from ticketlab.deploy.artifact import load_export, read_meta, save_export
from ticketlab.deploy.export import export
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit

SPEC = {"model": "lenet_300_100", "input_shape": [1, 28, 28], "num_classes": 10}


def test_export_is_verified_and_refuses_a_wrong_module(monkeypatch):
    model, mask = lenet_ticket()
    x = torch.rand(64, 1, 28, 28)
    exported = export(model, mask, "sparse", inputs=x)
    assert 0 <= exported.max_abs_diff <= ATOL
    with torch.inference_mode():
        assert torch.allclose(exported.module(x), mask.apply_(model)(x), atol=ATOL, rtol=0)

    import ticketlab.deploy.sparse as sparse

    def off_by_one_weight(model, mask):  # a bug that moves one kept weight
        module, records = real(model, mask)
        module.fc3.weight.data[0, 0] += 1.0
        return module, records

    real = sparse.sparsify_model
    monkeypatch.setattr(sparse, "sparsify_model", off_by_one_weight)
    with pytest.raises(TicketlabError, match="differs from the masked model"):
        export(model, mask, "sparse", inputs=x)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"format": "zip"}, "unknown export format 'zip'"),
    ({"round_to": 0}, "--round-to must be a whole number >= 1"),
])
def test_export_bad_arguments(kwargs, needle):
    model, mask = lenet_ticket()
    with pytest.raises(TicketlabError, match=needle):
        export(model, mask, inputs=torch.rand(4, 1, 28, 28), **kwargs)


def test_a_mask_of_another_model_is_refused():
    model, _ = lenet_ticket()
    _, other = lenet_ticket()
    other = other.with_tensors({**other, "fc1.weight": other["fc1.weight"][:, :100]})
    with pytest.raises(TicketlabError, match=r"mask 'fc1\.weight' has shape"):
        export(model, other, inputs=torch.rand(4, 1, 28, 28))


def test_saved_sparse_export_round_trips_and_is_small(tmp_path):
    model, mask = lenet_ticket(density=0.02)
    x = torch.rand(64, 1, 28, 28)
    exported = export(model, mask, "sparse", inputs=x, spec=SPEC)
    written = save_export(exported, tmp_path / "t.safetensors", x)
    size = written["files"][str(tmp_path / "t.safetensors")]
    assert size < written["dense_bytes"] / 10  # 2% of the weights, values and int32 indices
    _, meta = read_meta(tmp_path / "t.safetensors")
    assert meta["format"] == "sparse" and meta["spec"] == SPEC
    loaded = load_export(tmp_path / "t.safetensors")  # rebuilt from the recorded spec
    with torch.inference_mode():
        assert torch.equal(loaded(x), exported.module(x))  # same kernels, same order


def test_torchscript_twin_loads_with_torch_alone(tmp_path):
    model, mask = lenet_ticket(density=0.02)
    x = torch.rand(64, 1, 28, 28)
    exported = export(model, mask, "sparse", inputs=x)
    save_export(exported, tmp_path / "t.safetensors", x)
    torch.save(x[:7], tmp_path / "x.pt")
    with torch.inference_mode():
        torch.save(mask.apply_(model)(x[:7]), tmp_path / "want.pt")
    code = (  # ticketlab cannot be imported in the child: only torch
        "import sys; sys.modules['ticketlab'] = None\n"
        "import torch\n"
        f"m = torch.jit.load({str(tmp_path / 't.pt')!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"want = torch.load({str(tmp_path / 'want.pt')!r})\n"
        f"print(float((m(x) - want).abs().max()), tuple(m(x[:1]).shape))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    diff, shape = done.stdout.split(" ", 1)
    assert float(diff) <= ATOL and shape.strip() == "(1, 10)"


def test_loading_a_damaged_or_foreign_file_is_one_error(tmp_path):
    model, mask = lenet_ticket()
    x = torch.rand(8, 1, 28, 28)
    path = tmp_path / "t.safetensors"
    save_export(export(model, mask, inputs=x), path, x, script=False)
    with pytest.raises(TicketlabError, match="cannot rebuild"):
        load_export(path)  # no spec recorded: the architecture must be given
    with pytest.raises(TicketlabError, match="does not fit this architecture"):
        load_export(path, model=build_other())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TicketlabError, match="export the ticket again"):
        load_export(path, model=model)
    with pytest.raises(TicketlabError, match="not found"):
        load_export(tmp_path / "nothing.safetensors")


def build_other() -> nn.Module:
    from ticketlab.models import build_model

    return build_model("mlp_128_64", (1, 28, 28), 10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    config = tiny_config(levels=3, train="40it", controls=())
    run_imp(config, Runtime(out=out, device="cpu", quiet=True))
    return RunStore(out / config.run_name())


def test_export_cli_writes_a_verified_file_and_its_twin(run, tmp_path, capsys):
    code, out, err = cli(capsys, "export", str(run.root), "--level", "2", "--out",
                         str(tmp_path / "e" / "ticket.safetensors"))
    assert code == 0, err
    assert "fc1.weight" in out and "dense" in out  # 64% of weights left: dense is faster
    assert "validation images" in out and "dense checkpoint" in out
    _, meta = read_meta(tmp_path / "e" / "ticket.safetensors")
    assert meta["spec"]["model"] == "lenet_300_100" and meta["verified_on"] > 0
    assert (tmp_path / "e" / "ticket.pt").is_file()
    loaded = load_export(tmp_path / "e" / "ticket.safetensors")
    model = run_model(run, Unit(0, 2, "ticket"))
    x = torch.rand(16, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=ATOL, rtol=0)
    code, out, _ = cli(capsys, "export", str(run.root), "--quiet", "--no-torchscript")
    assert code == 0
    default = run.root / "export" / "seed_0_level_03_ticket_sparse.safetensors"  # the last
    assert default.is_file() and not default.with_suffix(".pt").exists()
    assert str(default) in out


def run_model(run, unit):
    from ticketlab.models import build_model

    config = json.loads((run.root / "config.json").read_text())["science"]
    model = build_model(config["model"]["model"], (1, 8, 8), 10)
    model.load_state_dict(run.load_weights(unit, "final"))
    return run.load_mask(unit).apply_(model).eval()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--level", "7"], "level 7 of seed 0 (ticket) is not finished"),
    (["--seed", "3"], "seed 3 has no finished ticket unit"),
    (["--variant", "random"], "has no finished random unit"),
    (["--format", "zip"], "invalid choice: 'zip'"),
    (["--round-to", "0"], "--round-to must be a whole number >= 1"),
])
def test_export_cli_errors(run, capsys, argv, needle):
    code, _, err = cli(capsys, "export", str(run.root), "--quiet", *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_export_cli_refuses_an_out_directory_and_a_damaged_mask(run, tmp_path, capsys):
    code, _, err = cli(capsys, "export", str(run.root), "--quiet", "--out", str(tmp_path))
    assert code == 2 and "is a directory" in err
    mask_file = run.dir(Unit(0, 1, "ticket")) / "mask.safetensors"
    good = mask_file.read_bytes()
    try:
        mask_file.write_bytes(good[:-10])
        code, _, err = cli(capsys, "export", str(run.root), "--level", "1", "--quiet",
                           "--out", str(tmp_path / "x.safetensors"))
        assert code == 2 and "mask.safetensors" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x.safetensors").exists()
    finally:
        mask_file.write_bytes(good)


def test_the_core_does_not_import_the_optional_extras():
    code = ("import sys, ticketlab.cli, ticketlab.deploy.export, ticketlab.deploy.artifact, "
            "ticketlab.experiments.export, ticketlab.deploy.compact, ticketlab.deploy.onnx\n"
            "print(sorted(m for m in ('torch_pruning', 'onnx', 'onnxruntime', 'lightning') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
