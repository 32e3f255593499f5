"""One self-contained HTML page: no external URL and no script, so it opens anywhere, offline."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from ticketlab.report.claims import headline, headline_rows, level_claim_columns
from ticketlab.report.runs import Run
from ticketlab.report.table import has_train_accuracy, variant_order

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; }
td small { color: #666; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; }
.note { color: #555; }
"""
NOTE = ("Test accuracy is measured at the early-stop iteration (lowest validation loss). "
        "Tables: mean ± sample std over seeds, min–max below. Figures: mean over seeds, error "
        "bars min–max (as in Frankle &amp; Carbin 2019), shaded band ±1 std.")
CLAIMS_NOTE = ("A level is a <em>winning ticket</em> when it reaches at least the dense test "
               "accuracy in at most the dense number of iterations (early stop): judged on the "
               "means over seeds, and seed by seed against the dense network of the same seed "
               "(k of n). Gaps are ticket minus control, in percentage points.")


def _stat(stats: dict[str, float | None] | None, n: int, fmt: str) -> str:
    if stats is None:  # no unit has the value: all diverged, or not recorded
        return "–"
    text = format(stats["mean"], fmt)
    if stats["std"] is not None:
        text += f" ± {format(stats['std'], fmt)}"
    if n > 1:
        text += f"<br><small>{format(stats['min'], fmt)}–{format(stats['max'], fmt)}</small>"
    return text


def _train_cell(s: dict[str, Any]) -> str:
    text = _stat(s["train_accuracy_early_stop_pct"], 1, ".2f")
    if s["train_accuracy_final_pct"] is not None:
        text += f"<br><small>end: {s['train_accuracy_final_pct']['mean']:.2f}</small>"
    return text


def levels_html(run: Run) -> str:
    """The levels table: per variant, early-stop iteration, test accuracy, training accuracy
    (when recorded) and the seeds counted; diverged units are marked and left out."""
    variants = variant_order(v for row in run.stats for v in row["variants"])
    train = has_train_accuracy(run.records)
    columns = ["early stop (it)", "test acc (%)"] + (["train acc (%)"] if train else []) + ["n"]
    head = "".join(f'<th colspan="{len(columns)}">{escape(v)}</th>' for v in variants)
    sub = "".join(f"<th>{c}</th>" for c in columns) * len(variants)
    body, any_diverged = [], False
    for row in run.stats:
        cells = [str(row["level"]), f"{row['remaining']:.1f}"]
        for v in variants:
            s = row["variants"].get(v)
            if not s:
                cells += [""] * len(columns)
                continue
            n = str(s["n_seeds"])
            if s["n_diverged"]:
                any_diverged = True
                n += f'<br><small class="diverged">+{s["n_diverged"]} diverged</small>'
            cells += [_stat(s["early_stop_iteration"], s["n_seeds"], ".0f"),
                      _stat(s["test_accuracy_pct"], s["n_seeds"], ".2f")]
            cells += [_train_cell(s)] if train else []
            cells.append(n)
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    notes = []
    if train:
        notes.append("train acc: mean accuracy on the fixed training subset at the early-stop "
                     "iteration, and at the end of training below.")
    if any_diverged:
        notes.append("n counts the seeds in the means; diverged units (non-finite loss) are "
                     "left out of every mean and of the figures.")
    note = f'<p class="note">{" ".join(notes)}</p>' if notes else ""
    return (f'<table><tr><th rowspan="2">level</th><th rowspan="2">% weights<br>remaining</th>'
            f"{head}</tr><tr>{sub}</tr>{''.join(body)}</table>{note}")


def claims_html(h: dict[str, Any]) -> str:
    """The headline answers, then the per-level claims (ticket vs dense, vs each control)."""
    if not h:
        return '<p class="note">No dense level (level 0): nothing to compare with.</p>'
    rows = "".join(f"<tr><td>{escape(q)}</td><td>{escape(a)}</td></tr>"
                   for q, a in headline_rows(h))
    html = f"<table>{rows}</table>"
    header, level_rows = level_claim_columns(h)
    if level_rows:
        html += ("<table><tr>" + "".join(f"<th>{escape(c)}</th>" for c in header) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>"
                           for r in level_rows) + "</table>")
    return html


def densities_html(rows: list[dict[str, Any]]) -> str:
    """The per-layer table: % of each prunable tensor kept in the ticket's mask."""
    tensors = list(dict.fromkeys(k for r in rows for k in r if k not in
                                 ("run", "level", "seed", "density")))
    head = "".join(f"<th>{escape(t)}</th>" for t in tensors)
    body = "".join(
        f"<tr><td>{r['level']}</td><td>{r['seed']}</td><td>{100 * r['density']:.2f}</td>"
        + "".join(f"<td>{100 * r[t]:.2f}</td>" if t in r else "<td></td>" for t in tensors)
        + "</tr>" for r in rows)
    return (f"<table><tr><th>level</th><th>seed</th><th>all prunable</th>{head}</tr>{body}"
            "</table>")


def supermask_html(records: list[dict[str, Any]]) -> str:
    """Criteria as rows, target densities as columns."""
    densities = list(dict.fromkeys(r["target_density"] for r in records))
    head = "".join(f"<th>{100 * d:.3g}%</th>" for d in densities)
    rows = []
    for name in dict.fromkeys(r["criterion"] for r in records):
        cells = {r["target_density"]: r["test_accuracy"] for r in records
                 if r["criterion"] == name}
        rows.append(f"<tr><td>{escape(name)}</td>" + "".join(
            f"<td>{100 * cells[d]:.2f}</td>" if d in cells else "<td></td>"
            for d in densities) + "</tr>")
    return f"<table><tr><th>criterion</th>{head}</tr>{''.join(rows)}</table>"


def render_html(runs: list[Run], densities: dict[str, list[dict[str, Any]]],
                figures: list[tuple[str, bytes]],
                sections: list[tuple[str, str]] | None = None) -> str:
    """The page: runs, levels and per-layer tables, figures (PNG data URIs), configurations."""
    title = "ticketlab report: " + ", ".join(r.name for r in runs)
    parts = [f"<h1>{escape(title)}</h1><ul>"]
    for run in runs:
        label = f" — {escape(run.label)}" if run.label != run.name else ""
        parts.append(f"<li><code>{escape(run.name)}</code>{label}</li>")
    parts.append(f'</ul><p class="note">{NOTE}</p><h2>Levels</h2>')
    for run in runs:
        parts.append(f"<h3>{escape(run.name)}</h3>{levels_html(run)}")
    parts.append(f'<h2>Claims</h2><p class="note">{CLAIMS_NOTE}</p>')
    for run in runs:
        parts.append(f"<h3>{escape(run.name)}</h3>{claims_html(headline(run.records))}")
    parts.append("<h2>Per-layer density of the ticket masks (%)</h2>")
    for run in runs:
        parts.append(f"<h3>{escape(run.name)}</h3>{densities_html(densities[run.name])}")
    for heading, body in sections or []:
        parts.append(f"<h2>{escape(heading)}</h2>{body}")
    parts.append("<h2>Figures</h2>")
    for caption, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{escape(caption)}</figcaption></figure>")
    parts.append("<h2>Configuration</h2>")
    for run in runs:
        config = {k: run.config.get(k) for k in ("science", "requested")}
        parts.append(f"<h3>{escape(run.name)} (hash {escape(str(run.config.get('hash')))})</h3>"
                     f"<pre>{escape(json.dumps(config, indent=2))}</pre>")
        if run.config.get("commands"):
            commands = "\n".join(map(str, run.config["commands"]))
            parts.append(f"<p>Commands that produced it:</p><pre>{escape(commands)}</pre>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
