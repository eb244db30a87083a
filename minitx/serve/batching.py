"""Dynamic batching with backpressure for `minitx serve`: requests join a bounded queue (in
requests and in source tokens; past either bound a request is refused at once), one worker
decodes what has arrived in as few calls as it can, and a request not answered within its
deadline is answered 504 and dropped from the queue unprocessed."""

import asyncio
import time
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeOptions:
    max_batch_texts: int = 64  # texts decoded together at most
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_texts: int = 64  # texts one request may send
    max_chars: int = 2000  # characters one text may have
    batching: bool = True  # off: each request is decoded alone, as it comes
    # Backpressure: past either bound a request is answered 429 at once instead of waiting.
    max_concurrent_requests: int = 128  # requests queued or being decoded, per route
    max_queued_tokens: int = 32768  # their source tokens (a request alone is always taken)
    request_timeout: float = 60.0  # seconds a request may wait for its answer (then 504)
    max_body_bytes: int = 2_000_000  # a larger request body is answered 413


class Overloaded(Exception):
    """The queue is full: the request is refused at once (429), to be sent again later."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class DeadlineExceeded(Exception):
    """The request was not answered within its timeout (504); its queued texts are dropped."""


@dataclass
class _Pending:
    texts: list[str]
    options: Hashable  # what run_group needs besides the texts; equal options share a call
    tokens: int = 0  # source tokens: what the queue's token bound counts
    expired: bool = False  # its client stopped waiting: drop it unprocessed
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """Collects requests and runs them through `run_group(texts, options)`, grouped by options."""

    def __init__(self, run_group, options: ServeOptions):
        self.run_group, self.options = run_group, options
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.batches = 0  # calls of run_group: fewer than requests when batching works
        self.admitted, self.admitted_tokens = 0, 0  # requests (and tokens) queued or running
        self.dropped = 0  # requests whose deadline passed while they were queued
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Answer what is queued, then end the worker."""
        await self.queue.join()
        if self._worker is not None:
            self._worker.cancel()

    async def submit(
        self, texts: list, options: Hashable, tokens: int = 0, timeout: float | None = None
    ) -> list:
        """The results for `texts`; Overloaded at once when the queue is full, DeadlineExceeded
        once `timeout` (default: the server's request_timeout) has passed."""
        limits = self.options
        full = self.admitted >= limits.max_concurrent_requests or (
            self.admitted > 0 and self.admitted_tokens + tokens > limits.max_queued_tokens
        )
        if full:
            raise Overloaded(retry_after=max(1, round(limits.max_wait_ms / 1000)))
        pending = _Pending(texts, options, tokens)
        self.admitted, self.admitted_tokens = self.admitted + 1, self.admitted_tokens + tokens
        try:
            await self.queue.put(pending)
            wait = limits.request_timeout if timeout is None else timeout
            # shield: a timeout leaves the future to the worker, which then skips the request
            return await asyncio.wait_for(asyncio.shield(pending.done), wait)
        except asyncio.TimeoutError:
            pending.expired = True
            raise DeadlineExceeded(
                f"no answer within {wait:g} s; the request was dropped"
            ) from None
        finally:
            self.admitted, self.admitted_tokens = self.admitted - 1, self.admitted_tokens - tokens

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            try:
                if self.options.batching:
                    await self._gather(batch)
                groups: dict[Hashable, list[_Pending]] = defaultdict(list)
                for pending in batch:
                    groups[pending.options].append(pending)
                for group in groups.values():
                    await self._run(group)
            finally:  # whatever happened, the queue's count stays right: stop() can drain it
                for _ in batch:
                    self.queue.task_done()

    async def _gather(self, batch: list[_Pending]) -> None:
        deadline = time.monotonic() + self.options.max_wait_ms / 1000
        size = len(batch[0].texts)
        while size < self.options.max_batch_texts:
            try:
                pending = await asyncio.wait_for(self.queue.get(), deadline - time.monotonic())
            except (asyncio.TimeoutError, ValueError):
                return
            batch.append(pending)
            size += len(pending.texts)

    async def _run(self, group: list[_Pending]) -> None:
        expired = [pending for pending in group if pending.expired]
        self.dropped += len(expired)
        group = [pending for pending in group if not pending.expired]
        if not group:
            return
        texts = [text for pending in group for text in pending.texts]
        self.batches += 1
        try:
            results = await asyncio.to_thread(self.run_group, texts, group[0].options)
        except Exception as error:
            if len(group) > 1:  # one request's bad input must not fail the others: each alone
                for pending in group:
                    await self._run([pending])
            else:
                _settle(group[0], error=error)
            return
        start = 0
        for pending in group:
            _settle(pending, result=results[start : start + len(pending.texts)])
            start += len(pending.texts)


def _settle(pending: _Pending, result=None, error: Exception | None = None) -> None:
    """Answer a request, unless its client is gone (its future cancelled)."""
    if pending.done.done():
        return
    if error is not None:
        pending.done.set_exception(error)
    else:
        pending.done.set_result(result)
