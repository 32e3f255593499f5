"""The claims on hand-made records whose answers are known: winning tickets by the project's
definition, ties, controls, budget caps, diverged units, one seed, level 0 only, one-shot."""

from __future__ import annotations

from typing import Any

import pytest

from ticketlab.report.claims import (
    headline,
    headline_markdown,
    headline_rows,
    level_claim_columns,
    stop_comparison,
)


def rec(seed: int, level: int, variant: str, density: float, it: float | None,
        acc: float | None, end: int = 100, **extra: Any) -> dict[str, Any]:
    return {"seed": seed, "level": level, "variant": variant, "density": density,
            "early_stop_iteration": it, "early_stop_test_accuracy": acc,
            "start_iteration": 0, "end_iteration": end, **extra}


def both(level: int, variant: str, density: float, *per_seed: tuple[float, float]
         ) -> list[dict[str, Any]]:
    """One record per seed 0, 1, ... from (early stop, accuracy) pairs."""
    return [rec(s, level, variant, density, it, acc) for s, (it, acc) in enumerate(per_seed)]


@pytest.fixture
def known() -> list[dict[str, Any]]:
    """Dense: early stop 55, accuracy 91% (means). Levels 1-3 winning (2 by a tie), 4 not."""
    return [
        *both(0, "ticket", 1.0, (50, 0.90), (60, 0.92)),
        *both(1, "ticket", 0.8, (40, 0.93), (50, 0.91)),      # winning; seed 1 less accurate
        *both(1, "reinit", 0.8, (100, 0.85), (80, 0.85)),     # 2x later; seed 0 at the budget
        *both(1, "random", 0.8, (20, 0.95), (20, 0.95)),      # faster and better: random only here
        *both(2, "ticket", 0.64, (55, 0.91), (55, 0.91)),     # ties the dense means exactly
        *both(2, "reinit", 0.64, (49.5, 0.95), (49.5, 0.95)),  # 10% sooner
        *both(3, "ticket", 0.512, (30, 0.95), (30, 0.95)),    # fastest
        *both(3, "reinit", 0.512, (60, 0.90), (60, 0.90)),
        *both(4, "ticket", 0.41, (90, 0.80), (90, 0.80)),     # not winning
        *both(4, "reinit", 0.41, (100, 0.70), (100, 0.70)),   # every seed at the budget
    ]


def test_winning_tickets_by_means_and_by_seed(known):
    h = headline(known)
    assert h["dense_accuracy"] == pytest.approx(91.0) and h["dense_early_stop"] == 55
    assert h["seeds"] == 2 and h["diverged_units"] == 0
    levels = {lv["level"]: lv for lv in h["levels"]}
    assert [lv["level"] for lv in h["levels"]] == [1, 2, 3, 4]
    assert [levels[i]["winning"] for i in (1, 2, 3, 4)] == [True, True, True, False]
    assert [(levels[i]["seeds_winning"], levels[i]["seeds_compared"]) for i in (1, 2, 3, 4)] \
        == [(1, 2), (0, 2), (2, 2), (0, 2)]
    assert levels[2]["faster"] is False and levels[2]["as_accurate"] is True  # the tie
    assert h["winning_down_to"] == pytest.approx(51.2)
    assert h["faster_down_to"] == pytest.approx(80.0)  # level 2 ties the dense early stop
    assert h["matches_down_to"] == pytest.approx(51.2)
    assert h["fastest_density"] == pytest.approx(51.2) and h["fastest_early_stop"] == 30
    assert h["fastest_sooner_pct"] == pytest.approx(100 * (1 - 30 / 55))
    assert h["fastest_winning"] is True
    assert dict(headline_rows(h))["tickets learn fastest at"] == \
        "51.2% (early stop 30, 45.5% sooner than dense)"
    assert h["best_density"] == pytest.approx(51.2)
    assert h["best_gain_points"] == pytest.approx(4.0)


def test_ticket_against_each_control(known):
    h = headline(known)
    levels = {lv["level"]: lv for lv in h["levels"]}
    reinit1, reinit2 = levels[1]["controls"]["reinit"], levels[2]["controls"]["reinit"]
    assert reinit1["gap_points"] == pytest.approx(7.0) and reinit1["stop_ratio"] == 2.0
    assert reinit1["stop_words"] == "2.00x later"
    assert reinit2["stop_ratio"] == pytest.approx(0.9) and reinit2["stop_words"] == "10% sooner"
    assert reinit2["gap_points"] == pytest.approx(-4.0)
    assert set(levels[1]["controls"]) == {"reinit", "random"}
    assert set(levels[3]["controls"]) == {"reinit"}  # random missing from level 2 on
    # reinit is slower and less accurate at 51.2% and 41%, not at 64% (sooner, better)
    assert h["controls_worse_from"]["reinit"] == pytest.approx(51.2)
    assert h["controls_worse_from"]["random"] is None
    header, rows = level_claim_columns(h)
    assert header[-2:] == ["vs random: gap (points)", "vs random: early stop"]
    assert rows[1][-4:] == ["-4.00", "reinit 10% sooner", "", ""]
    assert "x later" not in " ".join(rows[1])


def test_early_stops_at_the_end_of_the_budget(known):
    budget = headline(known)["budget"]
    assert budget["cells"] == 10
    assert budget["some_seed_at_end"] == 2  # level 1 reinit (seed 0), level 4 reinit (both)
    assert budget["every_seed_at_end"] == 1 and budget["cells_all_at_end"] == [[4, "reinit"]]
    assert budget["every_early_stop_at_end"] is False
    capped = [rec(s, lv, "ticket", 0.8 ** lv, 100, 0.9) for s in (0, 1) for lv in (0, 1)]
    assert headline(capped)["budget"]["every_early_stop_at_end"] is True
    text = dict(headline_rows(headline(capped)))
    assert "every early stop is at the end of training" in \
        text["cells (level, variant) with an early stop at the end of training"]
    assert "every early stop" not in headline_markdown(headline(known), "run")


@pytest.mark.parametrize("ticket_it, control_it, words", [
    (100, 224, "2.24x later"), (100, 90, "10% sooner"), (100, 100, "at the same iteration"),
    (0, 0, "at the same iteration"), (0, 20, "later (20 against 0)"), (100, None, "-"),
    (3867, 5500, "1.42x later"), (400, 399, "0.25% sooner"),
])
def test_stop_words_read_the_right_way(ticket_it, control_it, words):
    assert stop_comparison(ticket_it, control_it) == words


def test_a_diverged_run_whose_early_stops_are_all_at_zero():
    """`find --lr 10` before divergence was flagged: every early stop at iteration 0."""
    records = [rec(0, 0, "ticket", 1.0, 0, 0.114), rec(0, 1, "ticket", 0.8, 0, 0.103),
               rec(0, 1, "reinit", 0.8, 0, 0.156), rec(0, 1, "random", 0.8, 0, 0.05)]
    h = headline(records)
    level = h["levels"][0]
    assert level["winning"] is False and level["faster"] is False  # less accurate; 0 is not < 0
    assert level["controls"]["reinit"]["stop_ratio"] is None
    assert level["controls"]["reinit"]["stop_words"] == "at the same iteration"
    assert h["fastest_sooner_pct"] is None
    assert dict(headline_rows(h))["tickets learn fastest at"] == \
        "80.0% (early stop 0, not sooner than dense; not a winning ticket: -1.10 points " \
        "against dense)"
    assert h["winning_down_to"] is None
    assert dict(headline_rows(h))["tickets stop sooner than dense down to"] == \
        "no level: not at the first pruned level"
    assert "| 1 | 80.0 | 10.30 | 0 | no | 0 of 1 |" in headline_markdown(h, "run")


def test_flagged_diverged_units_are_left_out_of_the_means():
    nulls = {"early_stop_iteration": None, "early_stop_test_accuracy": None, "diverged": True,
             "diverged_iteration": 3, "early_stop_val_loss": None, "final_test_accuracy": None}
    records = [rec(0, 0, "ticket", 1.0, 50, 0.90), {**rec(1, 0, "ticket", 1.0, 0, 0.1), **nulls},
               rec(0, 1, "ticket", 0.8, 40, 0.92), {**rec(1, 1, "ticket", 0.8, 0, 0), **nulls},
               {**rec(0, 1, "reinit", 0.8, 0, 0), **nulls}, {**rec(1, 1, "reinit", 0.8, 0, 0),
                                                             **nulls}]
    h = headline(records)
    assert h["dense_accuracy"] == pytest.approx(90.0) and h["dense_early_stop"] == 50
    assert h["diverged_units"] == 4
    (level,) = h["levels"]
    assert level["winning"] and level["accuracy"] == pytest.approx(92.0)
    assert (level["seeds_winning"], level["seeds_compared"], level["diverged"]) == (1, 1, 1)
    reinit = level["controls"]["reinit"]
    assert reinit["accuracy"] is None and reinit["gap_points"] is None
    assert reinit["stop_words"] == "-" and reinit["diverged"] == 2
    assert h["controls_worse_from"]["reinit"] is None
    assert h["budget"]["some_seed_at_end"] == 0
    rows = dict(headline_rows(h))
    assert rows["diverged units (left out of every mean)"] == "4"
    assert "(2 diverged)" in headline_markdown(h, "run")


def test_every_dense_unit_diverged():
    records = [{**rec(0, 0, "ticket", 1.0, None, None), "diverged": True},
               rec(0, 1, "ticket", 0.8, 10, 0.5)]
    h = headline(records)
    assert h["dense_accuracy"] is None and "levels" not in h
    assert dict(headline_rows(h))["dense test accuracy at early stop"] == "-"


def test_one_seed_and_no_controls():
    records = [rec(0, 0, "ticket", 1.0, 50, 0.90), rec(0, 1, "ticket", 0.8, 50, 0.90)]
    h = headline(records)
    assert h["seeds"] == 1 and h["levels"][0]["winning"] is True  # a tie on both counts
    assert h["levels"][0]["seeds_winning"] == 1 and h["controls_worse_from"] == {}
    header, rows = level_claim_columns(h)
    assert len(header) == 6 and rows == [["1", "80.0", "90.00", "50", "yes", "1 of 1"]]


def test_only_the_dense_level():
    h = headline([rec(0, 0, "ticket", 1.0, 50, 0.90), rec(1, 0, "ticket", 1.0, 70, 0.92)])
    assert h["levels"] == [] and h["winning_down_to"] is None and "fastest_density" not in h
    md = headline_markdown(h, "dense")
    assert "| dense early-stop iteration | 60 |" in md and "winning" not in md
    assert headline([rec(0, 1, "ticket", 0.8, 50, 0.9)]) == {}  # no dense level: no claims
    assert headline_rows({}) == []


def test_one_shot_levels_are_taken_densest_first():
    """One-shot levels need not be in density order: 'down to' follows the density."""
    records = [rec(0, 0, "ticket", 1.0, 50, 0.90), rec(0, 1, "ticket", 0.05, 60, 0.80),
               rec(0, 2, "ticket", 0.5, 40, 0.91), rec(0, 3, "ticket", 0.2, 45, 0.90)]
    h = headline(records)
    assert [lv["level"] for lv in h["levels"]] == [2, 3, 1]
    assert h["winning_down_to"] == pytest.approx(20.0)
    assert h["faster_down_to"] == pytest.approx(20.0)
    assert h["fastest_density"] == pytest.approx(50.0)


def test_near_targets_name_the_nearest_level(known):
    h = headline(known, near=(50.0,))
    assert h["at_50"] == pytest.approx(51.2)
    assert h["reinit_gap_points_at_50"] == pytest.approx(5.0)
    assert h["reinit_stop_words_at_50"] == "2.00x later"
    assert dict(headline_rows(h))["ticket vs reinit at 51.2%"] == "+5.00 points; reinit stops " \
        "2.00x later"
