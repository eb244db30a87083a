"""Time and peak memory of one encoder layer (forward + backward) as the sequence grows, with full and
windowed attention, on the CPU. Prints a table and one JSON line; draws a log-log PNG.

Modes: `full` is minitx's default path (torch's fused scaled_dot_product_attention, which on the CPU
never holds the T×T matrix); `full-explicit` is the textbook softmax(QKᵀ/√d)·V with the T×T matrix,
the path minitx takes for attention maps and for bf16 on the CPU; `window` is `model.window: W`.
Each measurement runs in a fresh subprocess: peak memory = peak RSS minus the RSS before the layer ran.

    python scripts/bench_long.py                        # 256 … 8192 tokens
    python scripts/bench_long.py --quick                # 256 … 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("full", "full-explicit", "window")


def measure(mode: str, length: int, window: int, repeats: int) -> dict:
    """One (mode, length) point, in this process."""
    import torch

    from minitx.config import ModelConfig
    from minitx.model.attention import recording_attention
    from minitx.model.layers import EncoderLayer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    layer = EncoderLayer(
        ModelConfig(
            d_model=256,
            n_heads=4,
            d_ff=1024,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            activation="relu",
            norm="pre",
            attention="scaled_dot",
            positions="sinusoidal",
            n_kv_heads=None,
            window=window if mode == "window" else None,
        )
    )
    x = torch.randn(1, length, 256, requires_grad=True)
    mask = torch.ones(1, 1, 1, length, dtype=torch.bool)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        if mode == "full-explicit":
            with recording_attention(layer):  # the explicit formula, T×T weights kept
                layer(x, mask).sum().backward()
        else:
            layer(x, mask).sum().backward()
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "length": length,
        "ms": round(1000 * min(seconds), 2),
        "peak_mb": round(max(peak - before, 0) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 … 1024 tokens only")
    parser.add_argument("--window", type=int, default=64, help="neighbours on each side")
    parser.add_argument("--png", default="runs/bench_long.png")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.window, repeats=3)))
        return
    lengths = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096, 8192]
    rows = []
    for mode in MODES:
        for length in lengths:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    mode,
                    str(length),
                    "--window",
                    str(args.window),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(
                f"{mode:<14} {length:>5} tokens  {rows[-1]['ms']:>9.1f} ms  {rows[-1]['peak_mb']:>8.1f} MB",
                flush=True,
            )
    print()
    print("| tokens | " + " | ".join(f"{m} ms | {m} MB" for m in MODES) + " |")
    print("|---|" + "---|---|" * len(MODES))
    for length in lengths:
        cells = []
        for mode in MODES:
            row = next(r for r in rows if r["mode"] == mode and r["length"] == length)
            cells += [f"{row['ms']:.1f}", f"{row['peak_mb']:.0f}"]
        print(f"| {length} | " + " | ".join(cells) + " |")
    draw(rows, lengths, ROOT / args.png, args.window)
    print(json.dumps({"window": args.window, "rows": rows}))


def draw(rows: list[dict], lengths: list[int], path: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in MODES:
        label = f"window {window}" if mode == "window" else mode
        points = [r for r in rows if r["mode"] == mode]
        time_ax.loglog(
            [r["length"] for r in points], [r["ms"] for r in points], marker="o", label=label
        )
        memory_ax.loglog(
            [r["length"] for r in points],
            [max(r["peak_mb"], 0.1) for r in points],
            marker="o",
            label=label,
        )
    for ax, name in ((time_ax, "forward + backward (ms)"), (memory_ax, "peak memory (MB)")):
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(name)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # no clashing minor labels
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(
        "one encoder layer (d_model 256, 4 heads, d_ff 1024), batch 1, fp32, 2 CPU threads"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
