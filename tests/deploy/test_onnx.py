"""The ONNX export of a compact ticket, checked with onnxruntime (`deploy.onnx`)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.deploy.test_compact import ConvBN, Residual, randomize, ticket
from ticketlab.deploy.compact import compact
from ticketlab.deploy.onnx import onnx_session, to_onnx
from ticketlab.errors import TicketlabError
from ticketlab.models import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("torch_pruning")

# onnxruntime's CPU kernels sum in another order than torch's: a few float32 ulps of outputs
# of size ~1 (measured below 1e-6 here)
TOL = 1e-4


@pytest.mark.parametrize("make", [ConvBN, Residual, lambda: build_model("cifar_resnet_8_4",
                                                                        (3, 8, 8), 10)])
def test_compact_ticket_runs_the_same_in_onnxruntime_at_two_batch_sizes(tmp_path, make):
    x = torch.randn(4, 3, 8, 8)
    model, mask = ticket(make(), x)
    small, _ = compact(model, mask, x)
    path = tmp_path / "ticket.onnx"
    info = to_onnx(small, x, path)
    assert info["path"] == str(path) and path.is_file() and info["max_abs_diff"] <= TOL
    assert info["opset"] >= 13
    assert [p.name for p in tmp_path.iterdir()] == ["ticket.onnx"]  # no temporary left
    session = onnx_session(path)
    for batch in (1, 7):
        y = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            ref = small(y)
        out = session(y)
        assert out.shape == ref.shape
        assert float((out - ref).abs().max()) <= TOL


class FixedBatch(nn.Module):
    """Reshapes to a batch size written into the code: the export cannot take another."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.reshape(len(x), 12))  # len(): a constant to the tracer


def test_an_export_that_fails_at_another_batch_size_is_refused_and_not_written(tmp_path):
    path = tmp_path / "fixed.onnx"
    with pytest.raises(TicketlabError, match="batch size"):
        to_onnx(randomize(FixedBatch()), torch.randn(4, 3, 4), path)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_onnx_file_is_a_one_line_error(tmp_path):
    with pytest.raises(TicketlabError, match="not found"):
        onnx_session(tmp_path / "none.onnx")
