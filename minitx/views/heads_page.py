"""What `minitx heads` writes: RUN/heads/heads.json, heads.csv, the printed table, and heads.html,
one layer × head heatmap per attention kind and measure (inline SVG, self-contained like the run
report: nothing is loaded from the network)."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from minitx.heads.measure import KINDS
from minitx.views.report import PAGE

CELL = 44  # pixels per heatmap cell


def measures(report: dict) -> list[tuple[str, str]]:
    """(column, what it means) for every measure a head has, in the order the page draws them."""
    metric = report["metric"]
    return [
        ("importance", "gradient importance, normalised per layer (Michel et al.)"),
        (f"delta_{metric}", f"change in validation {metric} with the head alone masked"),
        ("delta_loss", "change in loss with the head alone masked"),
        ("entropy", "entropy of its attention (nats)"),
        ("distance", "mean distance to the keys it attends to (tokens)"),
        ("prev", "weight on the previous token"),
        ("same", "weight on the token at its own position"),
        ("next", "weight on the next token"),
        ("special", "weight on the start and end tokens"),
    ]


def write_heads(report: dict, directory: Path) -> list[Path]:
    """heads.json, heads.csv and heads.html in `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / name for name in ("heads.json", "heads.csv", "heads.html")]
    paths[0].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[1].write_text(heads_csv(report), encoding="utf-8")
    paths[2].write_text(heads_html(report), encoding="utf-8")
    return paths


def heads_csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(report["heads"][0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["heads"])
    return out.getvalue()


def heads_table(report: dict) -> str:
    """The heads as a text table, the least important first (what pruning would remove first)."""
    metric = report["metric"]
    columns = ["kind", "layer", "head", "importance", f"delta_{metric}", "delta_loss", "entropy"]
    columns += ["distance", "prev", "same", "next", "special"]
    rows = sorted(report["heads"], key=lambda h: h["importance"])
    cells = [[str(h[c]) for c in columns] for h in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def heads_html(report: dict) -> str:
    metric, baseline = report["metric"], report["baseline"]
    body = [
        f"<h1>Attention heads of {html.escape(Path(report['run']).name)}</h1>",
        f"<p>{report['examples']} examples of the {html.escape(report['split'])} split, "
        f"checkpoint of step {report['checkpoint_step']}; with every head: {metric} "
        f"{baseline[metric]}, loss {baseline['loss']}. Each cell is one head (columns) of one "
        "layer (rows); hover for its value.</p>",
    ]
    kinds = [k for k in KINDS if any(h["kind"] == k for h in report["heads"])]
    for column, meaning in measures(report):
        body.append(f"<h2>{html.escape(column)}: {html.escape(meaning)}</h2><div class='charts'>")
        body += [heatmap(report["heads"], kind, column) for kind in kinds]
        body.append("</div>")
    body.append(f"<h2>Every head</h2><pre>{html.escape(heads_table(report))}</pre>")
    page = PAGE.replace("__TITLE__", html.escape(f"{Path(report['run']).name}: heads"))
    return page.replace("__BODY__", "\n".join(body))


def heatmap(heads: list[dict], kind: str, column: str) -> str:
    """One kind's layer × head grid of `column` as SVG: darker is larger; a diverging scale
    (red below zero, blue above) for the changes."""
    cells = {(h["layer"], h["head"]): h[column] for h in heads if h["kind"] == kind}
    n_layers = 1 + max(layer for layer, _ in cells)
    n_heads = 1 + max(head for _, head in cells)
    largest = max((abs(v) for v in cells.values()), default=0.0) or 1.0
    left, top = 56, 34
    width, height = left + n_heads * CELL + 8, top + n_layers * CELL + 8
    parts = [
        f"<svg class='chart heatmap' width='{width}' height='{height}' "
        f"data-kind='{kind}' data-measure='{html.escape(column)}'>",
        f"<text class='chart-title' x='{left}' y='14'>{kind}</text>",
    ]
    for head in range(n_heads):
        parts.append(f"<text x='{left + head * CELL + 4}' y='{top - 4}'>h{head}</text>")
    for layer in range(n_layers):
        y = top + layer * CELL
        parts.append(f"<text x='4' y='{y + CELL // 2 + 4}'>layer {layer}</text>")
        for head in range(n_heads):
            if (layer, head) not in cells:
                continue
            value = cells[layer, head]
            share = abs(value) / largest
            colour = "214,39,40" if value < 0 else "31,119,180"
            x = left + head * CELL
            parts.append(
                f"<rect x='{x}' y='{y}' width='{CELL - 2}' height='{CELL - 2}' "
                f"fill='rgba({colour},{0.08 + 0.92 * share:.3f})' data-value='{value}'>"
                f"<title>{kind} layer {layer} head {head}: {column} {value}</title></rect>"
                f"<text x='{x + 3}' y='{y + CELL // 2 + 4}' class='cell'>{value:.2g}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
