"""Dynamic batching: concurrent requests coalesced into one forward pass.

Each request puts its instances on a queue with a future. One task per model takes the first
waiting request, then keeps taking requests until the batch holds ``max_batch_size`` instances
or ``max_delay_ms`` have passed since the first arrived (a lone request, with no other in
flight, goes at once: waiting could only add latency), runs the model once on all of them in a
worker thread (so the event loop keeps answering health checks), and hands every request its
own slice of the results, in order. A request larger than ``max_batch_size`` runs alone;
``max_batch_size=1`` turns batching off (one forward per request). A full queue refuses new
work (the server answers 503 with Retry-After) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DynamicBatcher", "Overloaded"]


class Overloaded(Exception):
    """The queue is full: try again later."""


@dataclass
class _Job:
    items: Sequence[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, predict: Callable[[list[Any]], list[Any]], max_batch_size: int = 64,
                 max_delay_ms: float = 5.0, max_queue: int = 1024,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch  # (batch size, seconds the oldest request waited)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.forwards = 0
        self.pending = 0  # requests submitted and not yet answered
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Answer every request submitted (queued or in the running batch), then stop."""
        while self.pending or not self.queue.empty():
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        """The model's results for ``items``, batched with whatever else is waiting."""
        if self.queue.qsize() >= self.max_queue:
            raise Overloaded(f"{self.queue.qsize()} requests are queued")
        job = _Job(items, asyncio.get_running_loop().create_future())
        self.pending += 1
        try:
            await self.queue.put(job)
            return await job.future
        finally:
            self.pending -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            jobs, size = [first], len(first.items)
            deadline = first.enqueued + self.max_delay
            while size < self.max_batch_size:
                if self.pending <= len(jobs) and self.queue.empty():
                    break  # nobody else is waiting: do not make a lone caller wait
                timeout = deadline - time.perf_counter()
                if timeout <= 0:  # waited long enough: take only what is already queued
                    if self.queue.empty():
                        break
                    nxt = self.queue.get_nowait()
                else:
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), timeout)
                    except TimeoutError:
                        break
                if size + len(nxt.items) > self.max_batch_size:
                    # It does not fit: it starts the next batch (put back at the front).
                    self.queue._queue.appendleft(nxt)  # type: ignore[attr-defined]
                    break
                jobs.append(nxt)
                size += len(nxt.items)
            items = [x for job in jobs for x in job.items]
            waited = time.perf_counter() - first.enqueued
            try:
                results = await loop.run_in_executor(None, self.predict, items)
            except Exception as err:
                if len(jobs) == 1:
                    if not first.future.done():
                        first.future.set_exception(err)
                    continue
                # One bad request must not fail the others: run them one by one.
                for job in jobs:
                    try:
                        out = await loop.run_in_executor(None, self.predict, list(job.items))
                    except Exception as one:
                        if not job.future.done():
                            job.future.set_exception(one)
                    else:
                        if not job.future.done():
                            job.future.set_result(out)
                continue
            self.forwards += 1
            if self.on_batch is not None:
                self.on_batch(len(items), waited)
            start = 0
            for job in jobs:
                n = len(job.items)
                if not job.future.done():  # the caller may have timed out
                    job.future.set_result(results[start:start + n])
                start += n
