"""One model version in service: its session, its threads, its batcher, its users in flight."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from nnspec.runtime.serve.batching import DynamicBatcher
from nnspec.runtime.serve.metrics import ServeMetrics
from nnspec.runtime.serve.models import ServedModel
from nnspec.runtime.serve.settings import ServeSettings


class LoadedVersion:
    """One model version being served: its session, threads, batcher and users in flight."""

    def __init__(
        self,
        model: ServedModel,
        *,
        instances: int,
        max_queue_delay_ms: float,
        settings: ServeSettings,
        metrics: ServeMetrics,
    ):
        self.model = model
        self.instances = instances
        self.max_queue_delay_ms = max_queue_delay_ms
        name, version = model.name, model.version
        self.executor = ThreadPoolExecutor(instances, thread_name_prefix=f"nnspec-{name}")
        self.batcher = DynamicBatcher(
            model.run,
            self.executor,
            max_batch_size=model.max_batch_size,
            max_queue_delay=max_queue_delay_ms / 1000,
            max_queue=settings.max_queue,
            workers=instances,
            on_batch=lambda rows: metrics.observe_batch(name, rows),
            on_queue=lambda depth: metrics.set_queue_depth(name, version, depth),
        )
        self.batcher.start()
        self._users = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self._users += 1
        self._idle.clear()

    def leave(self) -> None:
        self._users -= 1
        if self._users == 0:
            self._idle.set()

    def begin_drain(self) -> None:
        self.batcher.begin_drain()

    async def retire(self) -> None:
        """Answer every request that holds this version, then stop and release it."""
        self.batcher.begin_drain()
        await self._idle.wait()
        await self.batcher.stop()
        self.executor.shutdown(wait=False)
