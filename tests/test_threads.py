"""The intra-op thread count: what `auto` and a count resolve to, and that it is restored."""

import pytest
import torch

from ticketlab.errors import TicketlabError
from ticketlab.threads import AUTO_THREADS, apply_threads, resolve_threads, using_threads


def test_auto_is_the_measured_default_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads("auto") == resolve_threads(None) == AUTO_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # unusable: ignored, not an error
    assert resolve_threads("auto") == AUTO_THREADS


def test_a_count_overrides_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(2) == 2
    assert resolve_threads("2") == 2  # from a TOML string or the command line


@pytest.mark.parametrize("bad", [0, -1, "0", "x", "", 1.5, "1.5", True, [2]])
def test_bad_counts_are_refused_with_the_fix(bad):
    with pytest.raises(TicketlabError, match=r"positive integer or auto.*--threads"):
        resolve_threads(bad)


def test_threads_are_applied_and_the_callers_count_restored():
    before = torch.get_num_threads()
    other = 3 if before != 3 else 2
    with using_threads(other) as n:
        assert n == other and torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), using_threads(other):
        raise RuntimeError("a failing run")
    assert torch.get_num_threads() == before
    try:
        assert apply_threads(other) == other and torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)
