"""Load test of `minitx serve` on 127.0.0.1: concurrent clients, one sentence per request, with
dynamic batching on and off. Reports requests/s, p50/p99 latency and errors (which must be 0).

    python scripts/bench_serve.py --run-dir runs/multi30k_de_en_raw [--clients 8] [--requests 500]
                                  [--data ../shared/data/multi30k] [--max-wait-ms 5]

`--run-dir` may be an export (`minitx export`). The sentences are test_2016_flickr's German side,
sent in order, each client taking the next one. Prints a table and one JSON line per setting.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run_dir: Path, batching: bool, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "minitx", "serve", str(run_dir), "--port", str(port), "-q"]
    command += ["--max-wait-ms", str(max_wait_ms), "--batching" if batching else "--no-batching"]
    server = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{base}/health", timeout=1)
            return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not come up in 60 s")


def load_test(base: str, sentences: list[str], clients: int, requests: int) -> dict:
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        for index in counter:  # the iterator is shared: each request is taken once
            body = json.dumps({"texts": [sentences[index % len(sentences)]]}).encode()
            request = urllib.request.Request(
                f"{base}/translate", body, {"content-type": "application/json"}
            )
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=120) as reply:
                    reply.read()
                    ok = reply.status == 200
            except (urllib.error.URLError, OSError):
                ok = False
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "clients": clients,
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/multi30k")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()
    with gzip.open(args.data / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as handle:
        sentences = handle.read().splitlines()
    print(f"{'batching':<9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for batching in (True, False):
        server, base = start_server(args.run_dir.resolve(), batching, args.max_wait_ms)
        try:
            row = load_test(base, sentences, args.clients, args.requests)
        finally:
            server.terminate()
            server.wait(60)
        name = "on" if batching else "off"
        print(
            f"{name:<9} {row['requests_per_s']:>7.1f} {row['p50_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['errors']:>6}",
            flush=True,
        )
        print(json.dumps({"batching": batching, "run": str(args.run_dir), **row}), flush=True)


if __name__ == "__main__":
    main()
