"""Reporting: tables of a run's levels (plots and HTML come later)."""

from ticketlab.report.table import level_rows, levels_table

__all__ = ["level_rows", "levels_table"]
