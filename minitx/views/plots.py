"""Pictures a person looks at: attention heatmaps, training curves, a classification's confusion matrix."""

from __future__ import annotations

import json
import math
from pathlib import Path

# Figures are made with matplotlib's object API, never pyplot: files only, no display, no GUI
# backend chosen, and nothing changed for a program that imports minitx beside its own plots.
from matplotlib.figure import Figure


def plot_confusion_matrix(
    matrix: list[list[int]], labels: list[str], path: Path, title: str
) -> None:
    """Counts with true classes as rows and predicted classes as columns, colour by row share."""
    n = len(labels)
    shares = [[count / max(sum(row), 1) for count in row] for row in matrix]
    size = max(4.0, 0.6 * n + 2.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for row in range(n):
            for col in range(n):
                ax.text(
                    col,
                    row,
                    str(matrix[row][col]),
                    ha="center",
                    va="center",
                    color="white" if shares[row][col] > 0.5 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_attention(
    weights, queries: list[str], keys: list[str], path: Path, title: str, heads: list[int]
) -> None:
    """A grid of heatmaps, one per head: query tokens as rows, key tokens as columns, 0…1 colour."""
    columns = min(len(heads), 4)
    rows = math.ceil(len(heads) / columns)
    cell = 0.32  # inches per token, so labels stay readable
    width = max(3.0, cell * len(keys) + 1.2) * columns + 1.0
    height = max(2.5, cell * len(queries) + 1.2) * rows + 0.6
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, columns, squeeze=False)
    image = None
    for ax, head in zip(axes.flat, heads, strict=False):
        image = ax.imshow(weights[head], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_title(f"head {head}", fontsize=10)
        ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=8)
        ax.set_yticks(range(len(queries)), queries, fontsize=8)
    for ax in list(axes.flat)[len(heads) :]:
        ax.axis("off")
    # Above the axes, however many lines: `bbox_inches="tight"` keeps it in the picture.
    fig.suptitle(title, fontsize=11, y=1.0, va="bottom")
    fig.colorbar(image, ax=axes, fraction=0.025, pad=0.02, label="attention weight")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_curves(events: list[dict], path: Path, title: str) -> list[str]:
    """Training loss, learning rate and each validation metric over steps; returns the panels drawn."""
    train = [e for e in events if e.get("event") == "train"]
    valid = [e for e in events if e.get("event") == "validation"]
    metrics = [
        k
        for k in ("loss", "bleu", "chrf", "exact_match", "accuracy", "macro_f1")
        if valid and k in valid[-1]
    ]
    panels = ["training loss", "learning rate"] + [f"validation {m}" for m in metrics]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.4 * columns, 3.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel == "training loss":
            ax.plot([e["step"] for e in train], [e["loss"] for e in train])
        elif panel == "learning rate":
            ax.plot([e["step"] for e in train], [e["lr"] for e in train])
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        else:
            metric = panel.removeprefix("validation ")
            ax.plot(
                [e["step"] for e in valid], [e[metric] for e in valid], marker="o", markersize=3
            )
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return panels


def draw_attention_maps(
    maps: dict, out_dir: Path, name: str, layer: int | None = None, head: int | None = None
) -> list[Path]:
    """One PNG (grid of heads) and one JSON (the raw weights) per map of `attention_maps`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = {"source": maps["source_tokens"], "target": maps.get("target_tokens", [])}
    titles = {
        "encoder_self": "encoder self-attention",
        "decoder_self": "decoder self-attention",
        "cross": "cross-attention (target → source)",
    }
    outcome = maps.get("translation") or (
        f"{maps['prediction']['label']} ({maps['prediction']['probability']:.2f})"
        if "prediction" in maps
        else ""
    )
    written = []
    for item in maps["maps"]:
        if layer is not None and item["layer"] != layer:
            continue
        weights = item["weights"]
        heads = [head] if head is not None else list(range(weights.shape[0]))
        stem = f"{item['kind']}_layer{item['layer']}" + (f"_head{head}" if head is not None else "")
        queries, keys = tokens[item["queries"]], tokens[item["keys"]]
        title = f"{name}: {titles[item['kind']]}, layer {item['layer']}" + (
            f"\n→ {outcome}" if outcome else ""
        )
        plot_attention(weights, queries, keys, out_dir / f"{stem}.png", title, heads)
        record = {
            "kind": item["kind"],
            "layer": item["layer"],
            "heads": heads,
            "queries": queries,
            "keys": keys,
            "weights": [[[round(w, 5) for w in row] for row in weights[h].tolist()] for h in heads],
            **({"translation": maps["translation"]} if "translation" in maps else {}),
            **({"prediction": maps["prediction"]} if "prediction" in maps else {}),
        }
        (out_dir / f"{stem}.json").write_text(
            json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written += [out_dir / f"{stem}.png", out_dir / f"{stem}.json"]
    return written
