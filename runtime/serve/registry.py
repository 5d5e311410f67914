"""The models a server process serves now: versions, their batchers, load, unload and polling.

Every served model version is a :class:`LoadedVersion`: its onnxruntime session, a thread pool
of `instances` threads and its own dynamic batcher. Requests find a version through
:meth:`ModelRegistry.use`, which counts them in and out. Changing what is served (a load or
unload request, or a poll that finds a new or rewritten version) opens the new versions first,
off the event loop, then switches the model's version table in one step, so every request
from then on goes to the new version, and only then retires the versions that left the table:
each stops taking requests, runs what it has queued without waiting for batch-mates, waits
until the last request that holds it has its answer, and closes. No request fails or waits on
a swap.

A request that names no version gets the highest version served, as in Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from nnspec.compiler.errors import ServeError
from nnspec.runtime.serve.inference import ApiError
from nnspec.runtime.serve.loaded_version import LoadedVersion
from nnspec.runtime.serve.metrics import ServeMetrics
from nnspec.runtime.serve.models import ServedModel, intra_op_threads, open_model
from nnspec.runtime.serve.repository import (
    ModelRepository,
    RepositoryModel,
    TritonConfig,
    VersionPolicy,
    VersionSource,
)
from nnspec.runtime.serve.settings import ServeSettings

logger = logging.getLogger("nnspec.serve")

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
# Triton's load parameters that replace a model's configuration or files.
OVERRIDES = ("config", "file:")


@dataclass
class ModelEntry:
    """A model name's state: the versions served now, keyed by version, and why not if none."""

    name: str
    versions: dict[str, LoadedVersion] = field(default_factory=dict)
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)
    config: TritonConfig | None = None
    policy: VersionPolicy | None = None
    reason: str = ""
    unloaded: bool = False  # unloaded by request: polling leaves it alone until a load
    failed: dict[str, tuple[int, int]] = field(default_factory=dict)  # version -> its file's stamp
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def default(self) -> LoadedVersion | None:
        """The version for requests that name none: the highest one served."""
        if not self.versions:
            return None
        return self.versions[max(self.versions, key=int)]


class ModelRegistry:
    """The models of one repository, as served by one process.

    Args:
        repository: where models are read from.
        settings: batching, instances, providers and process count.
        metrics: where loads, batches and queue depths are counted.
        opener: opens one model version (tests substitute a slow or failing one).
    """

    def __init__(
        self,
        repository: ModelRepository,
        settings: ServeSettings,
        metrics: ServeMetrics,
        opener: Callable[..., ServedModel] = open_model,
    ):
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self._opener = opener
        self._entries: dict[str, ModelEntry] = {}
        self._initial: dict[str, tuple[RepositoryModel, dict[str, ServedModel]]] = {}
        self._poller: asyncio.Task | None = None
        self.started = False
        self.draining = False

    # ----- lifecycle ---------------------------------------------------------------------

    def open_all(self) -> None:
        """Open every model of the repository (before the event loop runs).

        Raises:
            ServeError: the path holds no model, or one cannot be opened.
        """
        names = self.repository.names()
        if not names:
            raise ServeError(
                f"no models in {self.repository.path}: expected *.onnx files or a Triton "
                "model repository DIR/<name>/<version>/model.onnx",
            )
        for name in names:
            source = self.repository.read(name)
            opened = {v.version: self.open_version(source, v) for v in source.versions}
            self._initial[name] = (source, opened)

    async def start(self) -> None:
        """Start serving what :meth:`open_all` opened, and polling if asked to."""
        for name, (source, opened) in self._initial.items():
            entry = self._entries.setdefault(name, ModelEntry(name))
            entry.versions = {v: self._loaded(source, m) for v, m in opened.items()}
            entry.stamps = {v.version: v.stamp for v in source.versions}
            entry.config, entry.policy = source.config, source.policy
        self._initial.clear()
        if self.settings.poll_seconds:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())
        self.started = True

    def begin_drain(self) -> None:
        """Shutdown begins: run queued requests at once, report not ready."""
        self.draining = True
        for entry in self._entries.values():
            for loaded in entry.versions.values():
                loaded.begin_drain()

    async def stop(self) -> None:
        """Stop polling; answer every request in flight; release every version."""
        self.begin_drain()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        versions = [v for e in self._entries.values() for v in e.versions.values()]
        await asyncio.gather(*(v.retire() for v in versions))

    # ----- lookups -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def knows(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names) or "none"
            raise ApiError(404, f"unknown model {name!r}; this server has: {known}")
        return entry

    def resolve(self, name: str, version: str | None = None) -> LoadedVersion:
        """The version that serves a request for `name` (and `version`, if given).

        Raises:
            ApiError: 404 for an unknown model or version, 503 for a model not loaded now.
        """
        entry = self.entry(name)
        if not entry.versions:
            why = f": {entry.reason}" if entry.reason else ""
            raise ApiError(503, f"model {name!r} is not loaded{why}")
        if not version:
            return entry.default()
        loaded = entry.versions.get(version)
        if loaded is None:
            served = ", ".join(sorted(entry.versions, key=int))
            raise ApiError(404, f"model {name!r} has no version {version!r} (serving: {served})")
        return loaded

    @contextlib.contextmanager
    def use(self, name: str, version: str | None = None) -> Iterator[LoadedVersion]:
        """Hold a model version for one request: it is not retired while held."""
        loaded = self.resolve(name, version)
        loaded.enter()
        try:
            yield loaded
        finally:
            loaded.leave()

    def is_ready(self) -> bool:
        return self.started and not self.draining

    def model_ready(self, name: str, version: str | None = None) -> bool:
        entry = self.entry(name)
        if version:
            return version in entry.versions
        return bool(entry.versions)

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every served version, and models not served now."""
        rows = []
        names = set(self._entries)
        with contextlib.suppress(ServeError, OSError):
            names |= set(self.repository.names())
        for name in sorted(names):
            entry = self._entries.get(name)
            if entry is not None and entry.versions:
                for version in sorted(entry.versions, key=int):
                    rows.append({"name": name, "version": version, "state": READY, "reason": ""})
            elif not ready_only:
                reason = entry.reason if entry is not None else "not loaded"
                rows.append({"name": name, "version": "", "state": UNAVAILABLE, "reason": reason})
        return rows

    # ----- the repository extension ------------------------------------------------------

    async def load(self, name: str, parameters: Iterable[str] = ()) -> None:
        """Load `name` from the repository, or bring it up to date if it is served.

        Args:
            name: the model's name in the repository.
            parameters: the request's parameter names; Triton's overrides (`config`,
                `file:...`) are refused, as nnspec loads only what the repository holds.

        Raises:
            ApiError: 404 if the repository has no such model, 400 if it cannot be loaded
                (the versions served before keep serving) or overrides were asked for.
        """
        overrides = [key for key in parameters if key.startswith(OVERRIDES)]
        if overrides:
            raise ApiError(
                400,
                f"load parameters {', '.join(overrides)} are not supported: nnspec serve loads "
                "models only as the repository on disk has them",
            )
        self._refuse_across_workers("load")
        if name not in await asyncio.to_thread(self._repository_names):
            raise ApiError(404, f"no model {name!r} in the repository {self.repository.path}")
        entry = self._entries.setdefault(name, ModelEntry(name))
        async with entry.lock:
            entry.unloaded = False
            try:
                source = await asyncio.to_thread(self.repository.read, name)
                await self._apply(entry, source)
            except ServeError as error:
                entry.reason = str(error)
                raise ApiError(400, f"failed to load {name!r}: {error}") from error

    async def unload(self, name: str) -> None:
        """Stop serving every version of `name`, after the requests they hold are answered."""
        self._refuse_across_workers("unload")
        entry = self.entry(name)
        async with entry.lock:
            entry.unloaded = True
            await self._switch(entry, {}, "unloaded")

    def _refuse_across_workers(self, action: str) -> None:
        if self.settings.workers > 1:
            raise ApiError(
                409,
                f"cannot {action} a model on one of {self.settings.workers} worker processes "
                "alone; with --workers, change the repository on disk and let --poll-seconds "
                "apply it in every worker",
            )

    def _repository_names(self) -> list[str]:
        try:
            return self.repository.names()
        except ServeError:
            return []

    async def poll_once(self) -> None:
        """Bring every model up to date with the repository on disk (what polling does)."""
        try:
            names = await asyncio.to_thread(self.repository.names)
        except ServeError as error:
            logger.warning("repository poll: %s", error)
            return
        for name in names:
            entry = self._entries.setdefault(name, ModelEntry(name))
            if entry.unloaded:
                continue
            async with entry.lock:
                try:
                    source = await asyncio.to_thread(self.repository.read, name)
                    await self._apply(entry, source, retry_failed=False)
                except ServeError as error:
                    entry.reason = str(error)
                    logger.warning("repository poll: %s", error)
        for name in set(self._entries) - set(names):
            entry = self._entries[name]
            if entry.versions:
                async with entry.lock:
                    await self._switch(entry, {}, "removed from the repository")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                await self.poll_once()
            except Exception:  # a poll must never end polling
                logger.exception("repository poll failed")

    # ----- opening and swapping versions -------------------------------------------------

    def open_version(self, source: RepositoryModel, version: VersionSource) -> ServedModel:
        """Open one version of `source` with the server's settings and its config's."""
        config, settings = source.config, self.settings
        max_batch_size = settings.max_batch_size
        if config.max_batch_size is not None:
            max_batch_size = min(max_batch_size, config.max_batch_size)
        instances = config.instances or settings.instances
        try:
            model = self._opener(
                source.name,
                version.version,
                version.onnx_path,
                providers=list(settings.providers),
                max_batch_size=max_batch_size,
                intra_op_threads=intra_op_threads(settings.workers, instances),
                labels=config.labels,
            )
        except ServeError:
            self.metrics.observe_load(source.name, ok=False)
            raise
        self.metrics.observe_load(source.name, ok=True)
        return model

    def _loaded(self, source: RepositoryModel, model: ServedModel) -> LoadedVersion:
        config, settings = source.config, self.settings
        delay = config.max_queue_delay_ms
        return LoadedVersion(
            model,
            instances=config.instances or settings.instances,
            max_queue_delay_ms=settings.max_queue_delay_ms if delay is None else delay,
            settings=settings,
            metrics=self.metrics,
        )

    async def _apply(
        self, entry: ModelEntry, source: RepositoryModel, *, retry_failed: bool = True
    ) -> None:
        """Serve exactly `source`'s versions: open what is new or changed, keep the rest.

        A version file that failed to open is not tried again until it changes, unless
        `retry_failed` (an explicit load request); meanwhile the versions served stay.
        """
        config_changed = entry.config != source.config
        to_open = [
            v
            for v in source.versions
            if config_changed
            or v.version not in entry.versions
            or entry.stamps.get(v.version) != v.stamp
        ]
        wanted = [v.version for v in source.versions]
        if not to_open and sorted(wanted) == sorted(entry.versions):
            entry.reason = ""
            return
        if not retry_failed and any(entry.failed.get(v.version) == v.stamp for v in to_open):
            return
        opened = {}
        for version in to_open:  # if one fails, nothing changes: the old versions keep serving
            try:
                opened[version.version] = await asyncio.to_thread(
                    self.open_version, source, version
                )
            except ServeError:
                entry.failed[version.version] = version.stamp
                raise
            entry.failed.pop(version.version, None)
        table = {
            v: self._loaded(source, opened[v]) if v in opened else entry.versions[v] for v in wanted
        }
        entry.config, entry.policy = source.config, source.policy
        entry.stamps = {v.version: v.stamp for v in source.versions}
        await self._switch(entry, table, "")
        logger.info("model %s now serves version(s) %s", entry.name, ", ".join(wanted))

    async def _switch(self, entry: ModelEntry, table: dict[str, LoadedVersion], reason: str):
        """Put `table` in service in one step, then retire the versions it dropped."""
        retired = [old for v, old in entry.versions.items() if table.get(v) is not old]
        entry.versions = table
        entry.reason = reason
        if not table:
            entry.stamps = {}
        await asyncio.gather(*(old.retire() for old in retired))
        for old in retired:
            self.metrics.set_queue_depth(entry.name, old.model.version, 0)
