"""Forward + backward time of one attention call: torch's fused kernel against the explicit formula.

    python scripts/bench_attention.py [--batch 256] [--length 14]

Why minitx/model/attention.py uses `explicit_attention` on the CPU in bf16: prints a table of
milliseconds (median of 20 runs) per dtype and path, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from minitx.model.attention import explicit_attention


def median_ms(fn, repeats: int = 20) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=14)
    parser.add_argument("--d-head", type=int, default=64)
    args = parser.parse_args()

    results = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        shape = (args.batch, args.heads, args.length, args.d_head)
        q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
        mask = torch.ones(args.batch, 1, 1, args.length, dtype=torch.bool)
        mask[::2, ..., -3:] = False  # some padding, as in real batches

        def fused(q=q, k=k, v=v, mask=mask):
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()

        def explicit(q=q, k=k, v=v, mask=mask):
            out, _weights = explicit_attention(q, k, v, mask)
            out.sum().backward()

        results[f"{name}_fused_ms"] = round(median_ms(fused), 2)
        results[f"{name}_explicit_ms"] = round(median_ms(explicit), 2)

    print(f"{'dtype':<6} {'fused ms':>9} {'explicit ms':>12}")
    for name in ("fp32", "bf16"):
        print(
            f"{name:<6} {results[name + '_fused_ms']:>9.2f} {results[name + '_explicit_ms']:>12.2f}"
        )
    print(json.dumps({"threads": torch.get_num_threads(), **vars(args), **results}))


if __name__ == "__main__":
    main()
