"""The dynamic batcher on its own: merging, splitting, limits and failure isolation."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nnspec.runtime.serve.batching import DynamicBatcher, QueueFull


class RecordingModel:
    """y = 2x + row-sum: a row-wise function, so merged and solo answers must agree."""

    def __init__(self, fail_on: float | None = None):
        self.calls: list[int] = []
        self.fail_on = fail_on

    def __call__(self, inputs):
        x = inputs["x"]
        self.calls.append(len(x))
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("poisoned row")
        return {"y": 2 * x + x.sum(axis=1, keepdims=True)}


def reference(x: np.ndarray) -> np.ndarray:
    return 2 * x + x.sum(axis=1, keepdims=True)


async def _submit_all(batcher, arrays, gap: bool = False):
    tasks = []
    for x in arrays:
        tasks.append(asyncio.create_task(batcher.submit({"x": x}, len(x))))
        if gap:
            await asyncio.sleep(0)
    return await asyncio.gather(*tasks, return_exceptions=True)


def run_batcher(model, arrays, **options):
    async def main():
        with ThreadPoolExecutor(2) as pool:
            batcher = DynamicBatcher(model, pool, **options)
            batcher.start()
            results = await _submit_all(batcher, arrays)
            await batcher.stop()
            return results

    return asyncio.run(main())


def rows(*sizes, width=3):
    rng = np.random.default_rng(sum(sizes))
    return [rng.standard_normal((n, width)).astype(np.float32) for n in sizes]


def test_merges_up_to_max_batch_size_and_splits_back():
    model = RecordingModel()
    arrays = rows(2, 1, 3, 2)  # 8 rows, room for 8: one call
    results = run_batcher(model, arrays, max_batch_size=8, max_queue_delay=30.0, max_queue=16)
    assert model.calls == [8]
    for x, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], reference(x))


def test_never_exceeds_max_batch_size_and_keeps_order():
    model = RecordingModel()
    arrays = rows(3, 3, 3, 1)
    results = run_batcher(model, arrays, max_batch_size=4, max_queue_delay=0.0, max_queue=16)
    assert all(n <= 4 for n in model.calls) and sum(model.calls) == 10
    for x, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], reference(x))


def test_request_larger_than_max_runs_alone():
    model = RecordingModel()
    arrays = rows(10, 1)
    results = run_batcher(model, arrays, max_batch_size=4, max_queue_delay=0.0, max_queue=16)
    assert sorted(model.calls) == [1, 10]
    np.testing.assert_array_equal(results[0]["y"], reference(arrays[0]))


def test_different_row_shapes_are_not_merged():
    model = RecordingModel()
    arrays = [*rows(2, width=3), *rows(2, width=5)]
    results = run_batcher(model, arrays, max_batch_size=4, max_queue_delay=0.0, max_queue=16)
    assert sorted(model.calls) == [2, 2]
    for x, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], reference(x))


def test_failing_request_does_not_fail_its_batch_neighbours():
    model = RecordingModel(fail_on=99.0)
    good_a, good_b = rows(2, 3)
    bad = np.full((1, 3), 99.0, np.float32)
    results = run_batcher(
        model, [good_a, bad, good_b], max_batch_size=6, max_queue_delay=30.0, max_queue=16
    )
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0]["y"], reference(good_a))
    np.testing.assert_array_equal(results[2]["y"], reference(good_b))


def test_queue_bound_refuses_extra_requests():
    async def main():
        with ThreadPoolExecutor(1) as pool:
            model = RecordingModel()
            batcher = DynamicBatcher(
                model, pool, max_batch_size=8, max_queue_delay=30.0, max_queue=2
            )
            batcher.start()
            waiting = [asyncio.create_task(batcher.submit({"x": x}, 1)) for x in rows(1, 1)]
            await asyncio.sleep(0)  # let both enter the queue
            assert batcher.queue_depth == 2
            with pytest.raises(QueueFull):
                await batcher.submit({"x": rows(1)[0]}, 1)
            await batcher.stop()  # drains: the two waiting requests still get answers
            return [t.result() for t in waiting], model.calls

    results, calls = asyncio.run(main())
    assert calls == [2] and [r["y"].shape for r in results] == [(1, 3), (1, 3)]


def test_workers_run_that_many_model_calls_at_once():
    """With workers=2 two calls are in flight together: both must reach the barrier."""
    barrier = threading.Barrier(2, timeout=60)

    def model(inputs):
        barrier.wait()  # raises BrokenBarrierError if the second call never comes
        return {"y": reference(inputs["x"])}

    arrays = rows(1, 1)
    results = run_batcher(
        model, arrays, max_batch_size=1, max_queue_delay=0.0, max_queue=8, workers=2
    )
    for x, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], reference(x))
