"""GET /metrics for Prometheus: requests by route and status, their latency, and each queue's
depth, batches and dropped requests, in the text exposition format (version 0.0.4).

Counted per route (`/translate`, `/predict`): every answer, with its status code (so 429, 504 and
413 show up), and its latency in a histogram; the queues are read when scraped.
"""

from __future__ import annotations

import time
from collections import defaultdict

# Latency buckets (seconds), from a single short sentence to a long queue.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COUNTED = ("/translate", "/predict")


class Metrics:
    """The server's counters, kept by a middleware (`watch`) and rendered by `render`."""

    def __init__(self):
        self.answers: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.answers[(route, status)] += 1
        self.latency_sum[route] += seconds
        self.latency_count[route] += 1
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.latency[route][i] += 1

    def watch(self, app) -> None:
        """Count every answer of the counted routes. Added last, this middleware is the
        outermost, so requests refused for their key (401) or size (413) count too."""

        @app.middleware("http")
        async def count(request, call_next):
            started = time.perf_counter()
            response = await call_next(request)
            if request.url.path in COUNTED:
                self.observe(request.url.path, response.status_code, time.perf_counter() - started)
            return response

    def render(self, batchers: dict) -> str:
        """The exposition text; `batchers` by route name ("translate", "predict")."""
        lines = [
            "# HELP minitx_requests_total Requests answered, by route and status code.",
            "# TYPE minitx_requests_total counter",
        ]
        for (route, status), count in sorted(self.answers.items()):
            lines.append(f'minitx_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += [
            "# HELP minitx_request_seconds Time from a request's arrival to its answer.",
            "# TYPE minitx_request_seconds histogram",
        ]
        for route in sorted(self.latency_count):
            for bound, count in zip(BUCKETS, self.latency[route], strict=True):
                lines.append(
                    f'minitx_request_seconds_bucket{{route="{route}",le="{bound}"}} {count}'
                )
            total = self.latency_count[route]
            lines += [
                f'minitx_request_seconds_bucket{{route="{route}",le="+Inf"}} {total}',
                f'minitx_request_seconds_sum{{route="{route}"}} {self.latency_sum[route]:.6f}',
                f'minitx_request_seconds_count{{route="{route}"}} {total}',
            ]
        gauges = {
            "minitx_queue_requests": ("gauge", "Requests queued or being decoded.", "admitted"),
            "minitx_queue_tokens": ("gauge", "Their source tokens.", "admitted_tokens"),
            "minitx_batches_total": ("counter", "Decoding calls (batches).", "batches"),
            "minitx_dropped_total": ("counter", "Requests dropped at their deadline.", "dropped"),
        }
        for name, (kind, meaning, attribute) in gauges.items():
            lines += [f"# HELP {name} {meaning}", f"# TYPE {name} {kind}"]
            for route, batcher in sorted(batchers.items()):
                lines.append(f'{name}{{route="/{route}"}} {getattr(batcher, attribute)}')
        return "\n".join(lines) + "\n"
