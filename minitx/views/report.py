"""The run report: RUN_DIR/report.html, one self-contained page of what was trained and how it went.

It reads only what the run directory holds (config.yaml, metrics.jsonl, eval/), so it works on a
run that is still training or was resumed. Curves are inline SVG drawn here, each point with a
tooltip of its logged value; for translation, the best and worst sample translations of each
evaluated split (by sentence chrF) link to their attention views in report_attention.html.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from minitx.config import config_to_dict
from minitx.metrics import read_metrics
from minitx.model.checkpoint import find_checkpoint
from minitx.run_dir import RunDir
from minitx.tasks import get_task
from minitx.views.attention_page import page_data, write_attention_page

if TYPE_CHECKING:
    from minitx.api import Model

SAMPLES = 5  # best and worst translations shown per split


def curves(events: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series: training loss, learning rate, throughput, every validation metric."""
    series: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        kind = event.get("event")
        if kind not in ("train", "validation"):
            continue
        for key, value in event.items():
            if key in ("event", "time", "step", "epoch", "best", "elapsed"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(f"{kind} {key}", []).append((event["step"], float(value)))
    return series


def svg_chart(
    name: str,
    points: list[tuple[float, float]],
    x_name: str = "step",
    connect: bool = True,
    width: int = 360,
    height: int = 180,
) -> str:
    """A line chart (or, unconnected, a scatter plot) with axes labels and one circle per point
    carrying its value as a tooltip."""
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span, step_span = (high - low) or 1.0, (max(steps) - min(steps)) or 1
    left, top, plot_w, plot_h = 64, 20, width - 74, height - 45

    def xy(step: int, value: float) -> tuple[float, float]:
        x = left + plot_w * (step - min(steps)) / step_span
        return x, top + plot_h * (1 - (value - low) / span)

    coordinates = [xy(s, v) for s, v in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" data-x="{s:g}" data-value="{v:g}">'
        f"<title>{html.escape(x_name)} {s:g}: {v:g}</title></circle>"
        for (x, y), (s, v) in zip(coordinates, points, strict=True)
    )
    return (
        f'<svg class="chart" data-name="{html.escape(name)}" width="{width}" height="{height}">'
        f'<text x="{left}" y="13" class="chart-title">{html.escape(name)}</text>'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{high:.4g}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{low:.4g}</text>'
        f'<text x="{left}" y="{height - 8}">{html.escape(x_name)} {min(steps):g}</text>'
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end">{max(steps):g}</text>'
        + (
            f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>'
            if connect
            else ""
        )
        + f"{dots}</svg>"
    )


def eval_reports(run: RunDir) -> dict[str, dict]:
    """Every split `minitx eval` scored: {split: its report}."""
    reports = {}
    for path in sorted(run.eval_dir.glob("*.json")) if run.eval_dir.is_dir() else []:
        try:
            reports[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue  # written while we read, or damaged: the report shows what it can
    return reports


def sample_rows(sources: list[str], hypotheses: list[str], references: list[str]) -> list[dict]:
    """The SAMPLES best and worst translations by sentence chrF, best first."""
    import sacrebleu

    scored = [
        {
            "source": src,
            "hypothesis": hyp,
            "reference": ref,
            "chrf": round(sacrebleu.sentence_chrf(hyp, [ref]).score, 2),
        }
        for src, hyp, ref in zip(sources, hypotheses, references, strict=True)
    ]
    ranked = sorted(range(len(scored)), key=lambda i: -scored[i]["chrf"])
    chosen = ranked[:SAMPLES] + [i for i in ranked[-SAMPLES:] if i not in ranked[:SAMPLES]]
    return [scored[i] for i in chosen]


def render(run: RunDir, reports: dict[str, dict], samples: dict[str, list[dict]]) -> str:
    """The report page for `run`, with its eval `reports` and `samples` (per split, rows of
    sample_rows plus an optional `example` index into report_attention.html)."""
    cfg = run.config()
    events = read_metrics(run)
    start = next((e for e in events if e.get("event") == "start"), {})
    end = [e for e in events if e.get("event") == "end"]
    parts = [f"<h1>{html.escape(run.name)}: {cfg.task}</h1>", "<ul class='facts'>"]
    facts = {
        "data": cfg.data.path,
        "tokenizer": f"{cfg.tokenizer.type}, {cfg.tokenizer.vocab_size} tokens",
        "parameters": f"{start.get('parameters', 0) / 1e6:.2f}M" if start else "?",
        "device": f"{start.get('device', '?')} ({start.get('dtype', '?')})",
        "steps": max((e.get("step", 0) for e in events), default=0),
        "state": end[-1]["reason"] if end else "training (or stopped without an end event)",
    }
    parts += [f"<li><b>{k}</b>: {html.escape(str(v))}</li>" for k, v in facts.items()]
    if (run.heads_dir / "heads.html").is_file():  # written by `minitx heads`
        parts.append("<li><b>heads</b>: <a href='heads/heads.html'>which heads matter</a></li>")
    parts.append("</ul><h2>Curves</h2><div class='charts'>")
    parts += [svg_chart(name, points) for name, points in curves(events).items()]
    parts.append("</div><h2>Evaluation</h2>")
    parts += [
        _eval_section(split, report, samples.get(split, [])) for split, report in reports.items()
    ]
    resolved = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    parts.append(f"<h2>Config</h2><pre>{html.escape(resolved)}</pre>")
    return PAGE.replace("__TITLE__", html.escape(f"{run.name}: report")).replace(
        "__BODY__", "\n".join(parts)
    )


def _eval_section(split: str, report: dict, samples: list[dict]) -> str:
    keys = [
        k
        for k in ("bleu", "chrf", "exact_match", "accuracy", "macro_f1", "loss", "ppl")
        if k in report
    ]
    rows = "".join(
        f"<tr><td>{k}</td><td class='score' data-key='{k}'>{report[k]}</td></tr>" for k in keys
    )
    out = [f"<h3 id='eval-{html.escape(split)}'>{html.escape(split)}</h3><table>{rows}</table>"]
    if "bleu_signature" in report:
        out.append(f"<p class='signature'>{html.escape(report['bleu_signature'])}</p>")
    matrix = report.get("confusion_matrix")
    if matrix:
        head = "".join(f"<th>{html.escape(label)}</th>" for label in matrix["labels"])
        body = "".join(
            f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{n}</td>" for n in row) + "</tr>"
            for label, row in zip(matrix["labels"], matrix["matrix"], strict=True)
        )
        out.append(
            f"<table class='confusion'><tr><th>true \\ predicted</th>{head}</tr>{body}</table>"
        )
    if samples:
        lines = "".join(
            f"<tr><td>{row['chrf']}</td><td>{html.escape(row['source'])}</td>"
            f"<td>{html.escape(row['hypothesis'])}</td><td>{html.escape(row['reference'])}</td>"
            + (
                f"<td><a href='report_attention.html#example={row['example']}'>attention</a></td>"
                if row.get("example") is not None
                else "<td></td>"
            )
            + "</tr>"
            for row in samples
        )
        out.append(
            "<table class='samples'><tr><th>chrF</th><th>source</th><th>translation</th>"
            f"<th>reference</th><th></th></tr>{lines}</table>"
        )
    return "\n".join(out)


def build_report(run: RunDir, checkpoint: str, load_model: Callable[[], Model]) -> list[Path]:
    """Write RUN_DIR/report.html (and, for runs with evaluated sample outputs and a checkpoint,
    report_attention.html with their attention, from `load_model()`); return the paths."""
    cfg, written, reports = run.config(), [], eval_reports(run)
    found = get_task(cfg.task).report_samples(run, reports)
    samples = {split: sample_rows(*columns) for split, columns in found.items()}
    rows = [row for split_rows in samples.values() for row in split_rows]
    if rows and find_checkpoint(run.checkpoint(checkpoint)) is not None:
        written.append(_attention_of(run, load_model(), rows))
    path = run.root / "report.html"
    path.write_text(render(run, reports, samples), encoding="utf-8")
    return [path, *written]


def _attention_of(run: RunDir, model: Model, rows: list[dict]) -> Path:
    """report_attention.html: one example per sample row (each row gets its `example` index)."""
    examples = []
    for index, row in enumerate(rows):
        row["example"] = index
        examples.append(model.attention(row["source"]))
    cfg = model.config.model
    title = f"{run.name}: sample translations"
    # Several examples: without the step-by-step terms, which would make the page megabytes each.
    data = page_data(
        examples, title, cfg.window, cfg.dilation, cfg.attention, cfg.positions, steps=False
    )
    return write_attention_page(data, run.root / "report_attention.html")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; max-width: 1200px; }
h1 { font-size: 20px; } h2 { font-size: 17px; margin-top: 24px; } h3 { font-size: 15px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart text { font-size: 11px; fill: #444; } .chart .chart-title { font-weight: bold; }
.chart circle { fill: #1f77b4; } .chart circle:hover { r: 5; fill: #d62728; }
table { border-collapse: collapse; margin: 6px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
.signature { font-family: monospace; color: #555; } pre { background: #f6f6f6; padding: 8px; }
</style></head><body>
__BODY__
</body></html>
"""
