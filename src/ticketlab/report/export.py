"""What an export did to each masked layer, and its size beside the dense checkpoint's."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ticketlab.deploy.export import Exported


def export_table(exported: Exported, written: dict[str, Any] | None = None,
                 title: str | None = None) -> Table:
    table = Table(title=title)
    layers = exported.layers
    if exported.format == "sparse":
        for col in ("layer", "weights", "kept", "density", "computed as"):
            table.add_column(col, justify="left" if col in ("layer", "computed as") else "right")
        for r in layers:
            table.add_row(r["layer"], f"{r['weights']:,}", f"{r['kept']:,}",
                          f"{r['density']:.2%}", "CSR" if r["format"] == "csr" else
                          "dense (the rule: faster here)")
    else:
        for col in ("layer", "channels", "kept", "removed", "kept dead"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        for r in layers:
            table.add_row(r["layer"], str(r["channels"]), str(r["kept"]), str(r["removed"]),
                          str(r.get("kept_dead", 0)))
    caption = [f"max |export - masked model| = {exported.max_abs_diff:.2g} on "
               f"{exported.extra.get('verified_on', '?')} validation images"]
    if written:
        size = next(iter(written["files"].values()))
        caption.append(f"file {size:,} bytes, dense checkpoint {written['dense_bytes']:,} "
                       f"({written['dense_bytes'] / max(size, 1):.1f}x smaller)")
    table.caption = "; ".join(caption)
    return table
