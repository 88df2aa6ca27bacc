"""Assemble the topology from the config, run it, shut it down in order.

Start: state store (offsets, buffer positions), sinks and their delivery loops, admin endpoint,
then every source; ready once all sources listen. Stop: not ready, sources stop taking input
(handing over partial lines), each buffer delivers what it holds within shutdown_timeout and puts
the rest on disk, offsets are committed, admin closes. Nothing is half-started: if a component
cannot start, the ones already started are stopped and the error is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podkit.common.admin import AdminServer
from podkit.common.config import parse_hostport
from podkit.common.podinfo import PodInfo
from podkit.images.log_agent.buffer import BufferPolicy, SinkBuffer
from podkit.images.log_agent.config import (
    SINK_MODELS,
    AgentConfig,
    HttpSourceConfig,
    TcpSourceConfig,
    component_ids,
)
from podkit.images.log_agent.disk_queue import census
from podkit.images.log_agent.metrics import Counters, build_registry
from podkit.images.log_agent.pipeline import Output, Pipeline
from podkit.images.log_agent.routing import Route
from podkit.images.log_agent.sources import Source, file_source, http_source, tcp_source
from podkit.images.log_agent.state import FILE_NAME, StateStore
from podkit.images.log_agent.transforms import Transformer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("log-agent")


def _open_lock(data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    return os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)


class StartError(Exception):
    """A component could not start; the message says which and why."""


class Agent:
    def __init__(self, config: AgentConfig, pod: PodInfo) -> None:
        self.config = config
        self.pod = pod
        self.counters = Counters()
        self.ready = False
        self.state: StateStore | None = None
        self.buffers: list[SinkBuffer] = []
        self.sources: list[Source] = []
        self.transformers: list[Transformer] = []
        self._lock_fd: int | None = None
        self._orphans: dict[str, tuple[str, Any]] = {}  # file checkpoints to adopt
        self._registry: CollectorRegistry | None = None
        self.admin: AdminServer | None = None
        if config.admin.enabled:
            self.admin = AdminServer(ready=self._readiness, registry=self._get_registry)

    def _readiness(self) -> bool | str:
        """Ready once every source listens, unless a receiver refuses a sink's requests (HTTP
        401, 403...): data waits for credentials to be fixed, and the probe says so."""
        if not self.ready:
            return False
        refused = [f"sink {b.id}: {b.refused}" for b in self.buffers if b.refused]
        return "; ".join(refused) if refused else True

    def _get_registry(self) -> CollectorRegistry:
        # Built on the first scrape: prometheus_client stays off the start-up path.
        if self._registry is None:
            self._registry = build_registry(self.counters)
        return self._registry

    def _open_state(self) -> StateStore:
        data_dir = self.config.data_dir
        try:
            self._lock_fd = _open_lock(data_dir)
        except OSError as exc:
            if "data_dir" in self.config.model_fields_set:  # asked for: that one or nothing
                raise StartError(f"data_dir {data_dir}: {exc.strerror}") from None
            # The default is not writable (a rootless pod, a read-only root): run, and say
            # plainly that offsets and buffers will not outlive the container.
            fallback = Path(tempfile.gettempdir()) / "log-agent"
            log.warning(
                "default data_dir not writable, using a temporary one: mount an emptyDir "
                "there (or set data_dir) to keep offsets and buffers across restarts",
                extra={"data_dir": str(data_dir), "error": exc.strerror, "using": str(fallback)},
            )
            data_dir = self.config.data_dir = fallback
            try:
                self._lock_fd = _open_lock(data_dir)
            except OSError as exc2:
                raise StartError(f"data_dir {data_dir}: {exc2.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartError(
                f"data_dir {data_dir} is in use by another log-agent; give each its own"
            ) from None
        try:
            return StateStore(data_dir)
        except (OSError, sqlite3.Error) as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StartError(f"data_dir {data_dir}: cannot open {FILE_NAME}: {exc}") from None

    def _build(self, state: StateStore) -> Pipeline:
        cfg = self.config
        outputs = []
        for sink_id, sink_cfg in zip(component_ids(cfg.sinks), cfg.sinks, strict=True):
            sink = SINK_MODELS[sink_cfg.type][1](sink_id, sink_cfg)
            policy = BufferPolicy(
                max_memory_bytes=sink_cfg.buffer.max_memory_bytes,
                max_disk_bytes=sink_cfg.buffer.max_disk_bytes,
                when_full=sink_cfg.buffer.when_full,
                initial_backoff=sink_cfg.retry.initial_backoff,
                max_backoff=sink_cfg.retry.max_backoff,
                max_attempts=sink_cfg.retry.max_attempts,
            )
            directory = cfg.data_dir / "buffers" / sink_id
            buffer = SinkBuffer(sink, policy, directory, state, self.counters)
            self.buffers.append(buffer)
            outputs.append(Output(Route(sink_cfg.match), buffer))
        pipeline = Pipeline(outputs, self.counters)
        for source_id, src in zip(component_ids(cfg.sources), cfg.sources, strict=True):
            transformer = Transformer(
                cfg.transforms, self.pod, container_name=getattr(src, "container_name", None)
            )
            self.transformers.append(transformer)
            self.sources.append(self._build_source(source_id, src, pipeline, transformer, state))
        self.counters.parse_failures = lambda: sum(t.parse_failures for t in self.transformers)
        self.counters.time_failures = lambda: sum(t.time_failures for t in self.transformers)
        self.counters.buffers = lambda: {
            b.id: (b.memory_bytes, b.disk_bytes, b.queued_events) for b in self.buffers
        }
        self.counters.file_lag = self._file_lag
        self.counters.blocked = lambda: [
            (b.id, r) for b in self.buffers for r in b.blocked_reasons()
        ]
        return pipeline

    def _orphaned_buffers(self, state: StateStore) -> None:
        """Disk buffers of sinks no longer configured (renamed, removed): kept as they are,
        reported at every start and in metrics, never silently ignored or deleted. Naming a
        sink after one delivers it."""
        root = self.config.data_dir / "buffers"
        owned = {b.id for b in self.buffers}
        if not root.is_dir():
            return
        for directory in sorted(root.iterdir()):
            if directory.name in owned or not directory.is_dir():
                continue
            delivered = int(state.load(f"buffer:{directory.name}").get("delivered", 0))
            records, events, nbytes = census(directory, delivered)
            if not records:
                continue
            self.counters.orphaned[directory.name] = (events, nbytes)
            log.warning(
                "a disk buffer no configured sink owns: kept, not delivered (a sink of this "
                "name delivers it)",
                extra={"buffer": directory.name, "events": events, "bytes": nbytes},
            )

    def _orphaned_checkpoints(self, state: StateStore) -> dict[str, tuple[str, Any]]:
        """File checkpoints of file sources no longer configured (renamed, removed), by key: a
        file source adopts those of the files it watches (file_source.FileSource.start)."""
        owned = {f"{file_source.SCOPE_PREFIX}{s.id}" for s in self.sources}
        found: dict[str, tuple[str, Any]] = {}
        for scope in state.scopes():
            if scope.startswith(file_source.SCOPE_PREFIX) and scope not in owned:
                for key, cp in state.load(scope).items():
                    if isinstance(cp, dict):
                        found[key] = (scope, cp)
        return found

    def _file_lag(self) -> dict[tuple[str, str], int]:
        lag: dict[tuple[str, str], int] = {}
        for source in self.sources:
            if isinstance(source, file_source.FileSource):
                for path, nbytes in source.lag_bytes().items():
                    lag[(source.id, path)] = nbytes
        return lag

    def _build_source(
        self,
        source_id: str,
        cfg: Any,
        pipeline: Pipeline,
        transformer: Transformer,
        state: StateStore,
    ) -> Source:
        ingest = pipeline.ingest_for(transformer)
        if isinstance(cfg, TcpSourceConfig):
            host, port = parse_hostport(cfg.listen)
            return tcp_source.TcpSource(
                source_id,
                host,
                port,
                ingest,
                self.counters,
                max_line_bytes=cfg.max_line_bytes,
                keep_empty=cfg.empty_lines == "keep",
            )
        if isinstance(cfg, HttpSourceConfig):
            host, port = parse_hostport(cfg.listen)
            return http_source.HttpSource(
                source_id, host, port, ingest, max_body_bytes=cfg.max_body_bytes
            )
        return file_source.FileSource(
            source_id, cfg, ingest, state, self.counters, orphans=self._orphans
        )

    async def start(self) -> dict[str, str]:
        """Start everything; return what each component listens on or watches."""
        self.state = self._open_state()
        started: list[Source] = []
        listening: dict[str, str] = {}
        try:
            self._build(self.state)
            self._orphaned_buffers(self.state)
            self._orphans.update(self._orphaned_checkpoints(self.state))
            for buffer in self.buffers:
                try:
                    await buffer.sink.start()
                except OSError as exc:
                    raise StartError(f"sinks ({buffer.id}): cannot start: {exc}") from None
                buffer.start()
            if self.admin is not None:
                host, port = parse_hostport(self.config.admin.listen)
                try:
                    await self.admin.start(host, port)
                except OSError as exc:
                    raise StartError(
                        f"admin: cannot listen on {self.config.admin.listen}: {exc.strerror}"
                    ) from None
                listening["admin"] = f"{host}:{self.admin.port}"
            for index, source in enumerate(self.sources):
                try:
                    await source.start()
                except OSError as exc:
                    what = getattr(self.config.sources[index], "listen", None) or "files"
                    raise StartError(
                        f"sources[{index}] ({source.id}): cannot start on {what}: "
                        f"{exc.strerror or exc}"
                    ) from None
                started.append(source)
                listening[source.id] = source.describe()
        except BaseException:
            for source in reversed(started):
                await source.stop()
            await self._close_outputs(timeout=1.0)
            raise
        if self._orphans:
            scopes = sorted({scope for scope, _ in self._orphans.values()})
            log.warning(
                "file checkpoints of file sources no longer configured: kept (a file source "
                "whose paths match takes them over)",
                extra={"files": len(self._orphans), "sources": scopes},
            )
        self.ready = True
        return listening

    async def stop(self) -> None:
        self.ready = False
        results = await asyncio.gather(*(s.stop() for s in self.sources), return_exceptions=True)
        for source, result in zip(self.sources, results, strict=True):
            if isinstance(result, Exception):  # keep shutting down: the sinks still need a flush
                log.error("source failed to stop", extra={"component": source.id}, exc_info=result)
        await self._close_outputs(timeout=self.config.shutdown_timeout)

    async def _close_outputs(self, timeout: float) -> None:
        # Buffers drain side by side, so one stuck sink does not eat the others' time.
        await asyncio.gather(*(b.drain(timeout) for b in self.buffers))
        if self.admin is not None:
            await self.admin.close()
        if self.state is not None:
            self.state.close()  # after the drains: their acknowledgements commit the offsets
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
