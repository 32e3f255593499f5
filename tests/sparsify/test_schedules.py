import itertools
import math

import pytest

from ticketlab.errors import TicketlabError
from ticketlab.sparsify import SCHEDULES, get_schedule, sparsity_at, window
from ticketlab.sparsify.schedules import agp, dsd, iterative, one_cycle

START, END, TARGET = 100, 500, 0.8
MID = (START + END) // 2
RISING = ["one_shot", "iterative", "agp", "one_cycle", "cos", "lin"]


def at(step: int, name: str, **params: object) -> float:
    return sparsity_at(step, TARGET, name, START, END, **params)


def test_registry_holds_every_schedule_with_a_doc():
    assert SCHEDULES.names() == [*RISING[:4], "cos", "lin", "dsd"]
    for name in SCHEDULES.names():
        assert SCHEDULES.doc(name) and "\n" not in SCHEDULES.doc(name)


@pytest.mark.parametrize("name", RISING)
def test_dense_before_start_target_from_end_on(name):
    assert at(0, name) == 0.0
    assert at(START - 1, name) == 0.0
    assert at(END, name) == pytest.approx(TARGET)
    assert at(END + 1000, name) == pytest.approx(TARGET)


@pytest.mark.parametrize("name", RISING)
def test_rising_schedules_never_decrease_and_stay_in_range(name):
    values = [at(s, name) for s in range(0, END + 50)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert all(0.0 <= v <= TARGET + 1e-12 for v in values)


@pytest.mark.parametrize(("name", "mid"), [
    ("one_shot", 1.0), ("iterative", 2 / 3), ("agp", 1 - 0.125), ("cos", 0.5), ("lin", 0.5),
    ("dsd", 1.0),
])
def test_values_at_mid_window(name, mid):
    assert at(MID, name) == pytest.approx(TARGET * mid)


def test_values_at_start():
    assert at(START, "one_shot") == TARGET  # the single pruning happens at the start
    assert at(START, "iterative") == pytest.approx(TARGET / 3)  # first of n steps
    for name in ("agp", "one_cycle", "cos", "lin", "dsd"):
        assert at(START, name) == pytest.approx(0.0, abs=1e-12)


def test_agp_is_zhu_and_gupta_cubic():
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        s_i, s_f = 0.2, 0.95
        step = START + round(p * (END - START))
        expected = s_f + (s_i - s_f) * (1 - p) ** 3
        assert sparsity_at(step, s_f, "agp", START, END, initial=s_i) == pytest.approx(expected)
    assert agp(0.5) == pytest.approx(1 - 0.125)
    assert agp(0.5, power=1) == pytest.approx(0.5)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_iterative_has_n_equal_plateaus(n):
    values = [at(s, "iterative", n=n) for s in range(START, END + 1)]
    levels = sorted(set(round(v, 12) for v in values))
    assert levels == pytest.approx([TARGET * k / n for k in range(1, n + 1)])
    # each step lasts 1/n of the window (to the iteration)
    for k in range(n):
        assert at(START + math.ceil(k * (END - START) / n), "iterative", n=n) == \
            pytest.approx(TARGET * (k + 1) / n)
    assert iterative(0.999, n=1) == 1.0


def test_iterative_steps_land_on_whole_fractions_despite_float_rounding():
    assert iterative(0.29, n=100) == pytest.approx(0.30)  # 0.29 * 100 = 28.999...


def test_one_cycle_is_an_s_curve_from_exactly_zero():
    assert one_cycle(0.0) == 0.0 and one_cycle(1.0) == pytest.approx(1.0)
    assert one_cycle(0.1) < 0.05 and one_cycle(0.9) > 0.95
    # fasterai's unshifted curve differs by at most its value at 0 (~0.25%)
    fasterai = lambda p: (1 + math.exp(6 - 14)) / (1 + math.exp(6 - 14 * p))
    assert max(abs(one_cycle(p / 100) - fasterai(p / 100)) for p in range(101)) < 0.003


def test_dsd_goes_up_to_the_target_and_back_to_dense():
    values = [at(s, "dsd") for s in range(0, END + 100)]
    peak = values.index(max(values))
    assert peak == MID and values[peak] == pytest.approx(TARGET)
    assert all(b >= a for a, b in itertools.pairwise(values[:peak + 1]))
    assert all(b <= a for a, b in itertools.pairwise(values[peak:]))
    assert at(END, "dsd") == pytest.approx(0.0, abs=1e-12)
    assert at(END + 99, "dsd") == 0.0
    assert dsd(0.25) == pytest.approx(0.5)  # sin²(π/4)


def test_dsd_square_shape_is_dense_sparse_dense_thirds():
    assert [dsd(p, shape="square") for p in (0.0, 0.3, 1 / 3, 0.5, 0.66, 2 / 3, 1.0)] == \
        [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_step_strings_with_iterations_per_epoch():
    assert window("1ep", "5ep", iterations_per_epoch=100) == (100, 500)
    assert window("50it", "2ep", iterations_per_epoch=100) == (50, 200)
    assert window(0, "300it") == (0, 300)
    assert sparsity_at(300, TARGET, "lin", "1ep", "5ep", iterations_per_epoch=100) == \
        pytest.approx(at(300, "lin"))


def test_callables_and_bound_parameters():
    assert sparsity_at(MID, TARGET, lambda p: p * p, START, END) == pytest.approx(TARGET / 4)
    assert get_schedule("iterative", n=4)(0.5) == 0.75
    assert get_schedule("AGP")(1.0) == 1.0  # names are case-insensitive


@pytest.mark.parametrize(("call", "message"), [
    (lambda: sparsity_at(0, 1.5, "lin", 0, 10), "not a fraction"),
    (lambda: sparsity_at(0, 90, "lin", 0, 10), "not a fraction"),
    (lambda: sparsity_at(0, 0.9, "lin", 0, 10, initial=-0.1), "not a fraction"),
    (lambda: sparsity_at(0, 0.9, "lin", 10, 10), "must come after"),
    (lambda: sparsity_at(0, 0.9, "lin", "2ep", "1ep", iterations_per_epoch=5), "must come after"),
    (lambda: sparsity_at(0, 0.9, "lin", "0it", "1ep"), "iterations_per_epoch"),
    (lambda: sparsity_at(0, 0.9, "lin", "1 epoch", "2ep"), "not a step"),
    (lambda: sparsity_at(0, 0.9, "iterative", 0, 10, n=0), "n >= 1"),
    (lambda: sparsity_at(0, 0.9, "iterative", 0, 10, n=2.5), "n >= 1"),
    (lambda: sparsity_at(0, 0.9, "cubic", 0, 10), "unknown schedule"),
    (lambda: sparsity_at(0, 0.9, "lin", 0, 10, n=3), "bad parameters"),
    (lambda: sparsity_at(0, 0.9, "dsd", 0, 10, shape="sine"), "unknown dsd shape"),
    (lambda: get_schedule("lin")(1.5), "outside [0, 1]"),
])
def test_bad_values_are_one_line_errors(call, message):
    with pytest.raises(TicketlabError, match=message.replace("[", r"\[")) as e:
        call()
    assert "\n" not in str(e.value)


def test_figure_has_one_panel_per_schedule(tmp_path):
    pytest.importorskip("matplotlib")
    from ticketlab.sparsify.figure import main, schedules_figure

    fig = schedules_figure(total=50, start=5, end=40)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(" ")[0] for ax in panels] == SCHEDULES.names()
    dsd_line = panels[-1].lines[0].get_ydata()
    assert dsd_line[0] == 0 and dsd_line[-1] == pytest.approx(0) and max(dsd_line) > 80
    assert main([str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "s.svg").exists()
