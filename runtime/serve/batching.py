"""Dynamic batching: concurrent requests for one model merged into one onnxruntime call.

Requests wait in a bounded queue. When a run slot is free, the batcher takes the oldest
request and every later one with the same per-row input shapes, up to `max_batch_size` rows,
waiting at most `max_queue_delay` for more to arrive; it concatenates their inputs along the
first dimension, runs the model on a worker thread (off the event loop) and hands each request
its own slice of the outputs. A request with more rows than `max_batch_size` runs alone.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]


class QueueFull(Exception):
    """The batcher already holds `max_queue` waiting requests."""


@dataclass
class _Pending:
    inputs: Arrays
    rows: int
    key: tuple  # per-row shapes and dtypes: only requests with equal keys can be merged
    future: asyncio.Future = field(repr=False)


def _merge_key(inputs: Arrays) -> tuple:
    return tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(inputs.items()))


class DynamicBatcher:
    """Queue, merge and run requests for one model.

    Args:
        run: the model call, inputs by name -> outputs by name (runs on `executor`).
        executor: where `run` executes; the batcher keeps at most `workers` calls in flight.
        max_batch_size: rows per call; 1 disables merging.
        max_queue_delay: seconds to wait for more requests once a call could start.
        max_queue: waiting requests beyond which :meth:`submit` raises QueueFull.
        workers: model calls in flight at once.
        on_batch: called with the row count of every model call (for metrics).
        on_queue: called with the number of waiting requests whenever it changes.
    """

    def __init__(
        self,
        run: Callable[[Arrays], Arrays],
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_delay: float,
        max_queue: int,
        workers: int = 1,
        on_batch: Callable[[int], None] = lambda rows: None,
        on_queue: Callable[[int], None] = lambda depth: None,
    ):
        self._run = run
        self._executor = executor
        self.max_batch_size = max(1, max_batch_size)
        self._max_delay = max(0.0, max_queue_delay)
        self._max_queue = max_queue
        self._on_batch = on_batch
        self._on_queue = on_queue
        self._queue: collections.deque[_Pending] = collections.deque()
        self._slots = asyncio.Semaphore(max(1, workers))
        self._arrived = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._draining = False

    @property
    def max_queue(self) -> int:
        """Waiting requests beyond which :meth:`submit` raises QueueFull."""
        return self._max_queue

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a model call (not counting those running)."""
        return len(self._queue)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._schedule())

    async def submit(self, inputs: Arrays, rows: int) -> Arrays:
        """Queue one request (all inputs have `rows` rows) and wait for its outputs."""
        if len(self._queue) >= self._max_queue:
            raise QueueFull
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, rows, _merge_key(inputs), future))
        self._on_queue(len(self._queue))
        self._arrived.set()
        return await future

    def begin_drain(self) -> None:
        """From now on run queued requests at once, without waiting for batch-mates."""
        self._draining = True
        self._arrived.set()

    async def stop(self) -> None:
        """Finish every queued and running request, then stop the scheduler."""
        self.begin_drain()
        while self._queue or self._running:
            self._arrived.set()
            await asyncio.gather(*self._running, return_exceptions=True)
            await asyncio.sleep(0.005)  # let the scheduler take what is still queued
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            deadline = loop.time() + self._max_delay
            while not self._draining and self._mergeable_rows() < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            task = loop.create_task(self._execute(self._take_batch()))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _mergeable_rows(self) -> int:
        head = self._queue[0]
        return sum(p.rows for p in self._queue if p.key == head.key)

    def _take_batch(self) -> list[_Pending]:
        head = self._queue.popleft()
        batch, rows, kept = [head], head.rows, collections.deque()
        while self._queue:
            item = self._queue.popleft()
            if item.key == head.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self._queue = kept
        self._on_queue(len(kept))
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                await self._run_alone(batch[0])
            else:
                await self._run_merged(batch)
        finally:
            self._slots.release()

    async def _call(self, inputs: Arrays, rows: int) -> Arrays:
        self._on_batch(rows)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, inputs)

    async def _run_alone(self, item: _Pending) -> None:
        try:
            outputs = await self._call(item.inputs, item.rows)
        except Exception as error:  # the model's own failure goes back to its request
            _settle(item.future, error=error)
        else:
            _settle(item.future, outputs)

    async def _run_merged(self, batch: list[_Pending]) -> None:
        total = sum(item.rows for item in batch)
        merged = {
            name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs
        }
        try:
            outputs = await self._call(merged, total)
            if any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
                raise ValueError("an output does not keep the batch dimension")
        except Exception:
            # One bad request must not fail its neighbours: run each alone to find out.
            for item in batch:
                await self._run_alone(item)
            return
        start = 0
        for item in batch:
            stop = start + item.rows
            _settle(item.future, {name: a[start:stop] for name, a in outputs.items()})
            start = stop


def _settle(future: asyncio.Future, result=None, *, error: Exception | None = None) -> None:
    # A client that hung up cancels its future; its result has nowhere to go.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
