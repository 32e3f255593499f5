"""Reporting: the levels table, figures in the style of Frankle & Carbin (2019) and an HTML page.

Plotting imports matplotlib only when a figure is drawn.
"""

from ticketlab.report.build import write_report
from ticketlab.report.table import level_rows, level_stats, levels_table, variant_order

__all__ = ["level_rows", "level_stats", "levels_table", "variant_order", "write_report"]
