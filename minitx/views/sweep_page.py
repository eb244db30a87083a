"""A sweep's report page, STUDY/report.html: the trials table, the objective per finished trial,
and the objective against each searched parameter (a choice's values are placed in the order the space
lists them; a log range on log10 of its values). Self-contained, like the run report."""

from __future__ import annotations

import html
import math
from pathlib import Path

from minitx.sweep.results import TrialRow, table
from minitx.sweep.study import Sweep
from minitx.views.report import PAGE, svg_chart


def write_sweep_page(sweep: Sweep, rows: list[TrialRow]) -> Path:
    # A pruned trial's value is from the step it was stopped at: not comparable, not drawn.
    scored = [row for row in rows if row.state == "complete" and row.value is not None]
    metric = sweep.metric
    charts = []
    if scored:
        charts.append(
            svg_chart(
                f"validation {metric} per trial",
                [(row.number, row.value) for row in scored],
                x_name="trial",
                connect=False,
            )
        )
    for parameter in sweep.parameters:
        points = []
        for row in scored:
            if parameter.key not in row.params:
                continue
            value = row.params[parameter.key]
            if parameter.kind == "choice":
                x = float(list(parameter.values).index(value))
            else:
                x = math.log10(value) if parameter.kind == "log" else float(value)
            points.append((x, row.value))
        if points:
            axis = {"choice": " (choice index)", "log": " (log10)"}.get(parameter.kind, "")
            charts.append(
                svg_chart(
                    f"{metric} against {parameter.key}",
                    points,
                    x_name=parameter.key + axis,
                    connect=False,
                )
            )
    choices = [
        f"<li>{html.escape(p.key)}: "
        + ", ".join(f"{i} = {html.escape(str(v))}" for i, v in enumerate(p.values))
        + "</li>"
        for p in sweep.parameters
        if p.kind == "choice"
    ]
    body = [
        f"<h1>sweep {html.escape(sweep.study_dir.name)}: validation {html.escape(metric)} "
        f"({'lower' if sweep.lower_is_better else 'higher'} is better)</h1>",
        f"<h2>Trials</h2><pre class='trials'>{html.escape(table(sweep, rows))}</pre>",
        "<h2>Objective of the finished trials</h2><div class='charts'>",
        *charts,
        "</div>",
    ]
    if choices:
        body.append("<p>Choice indices:</p><ul>" + "".join(choices) + "</ul>")
    path = sweep.study_dir / "report.html"
    page = PAGE.replace("__TITLE__", html.escape(f"sweep {sweep.study_dir.name}"))
    path.write_text(page.replace("__BODY__", "\n".join(body)), encoding="utf-8")
    return path
