"""Assemble the topology from the config, run it, shut it down in order.

Start: pipeline pump, admin endpoint, then every source; ready once all sources listen.
Stop:  not ready, sources stop taking input (flushing partial lines), the pipeline drains into
the sinks, sinks close, admin closes. Nothing is half-started: if one source cannot start, the
ones already started are stopped and the error is reported.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from podkit.common.admin import AdminServer
from podkit.common.config import parse_hostport
from podkit.common.podinfo import PodInfo
from podkit.images.log_agent.config import (
    AgentConfig,
    FileSource,
    HttpSource,
    TcpSource,
    component_ids,
)
from podkit.images.log_agent.metrics import Counters, build_registry
from podkit.images.log_agent.pipeline import Pipeline
from podkit.images.log_agent.sinks.stdout import StdoutSink
from podkit.images.log_agent.sources import Source, file_source, http_source, tcp_source
from podkit.images.log_agent.transforms import Transformer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("log-agent")


class StartError(Exception):
    """A component could not start; the message says which and why."""


class Agent:
    def __init__(self, config: AgentConfig, pod: PodInfo) -> None:
        self.config = config
        self.counters = Counters()
        transformer = Transformer(
            parse=config.transforms.parse, add_fields=config.transforms.add_fields, pod=pod
        )
        self.counters.parse_failures = lambda: transformer.parse_failures
        sinks = [
            StdoutSink(sink_id, sink.format)
            for sink_id, sink in zip(component_ids(config.sinks), config.sinks, strict=True)
        ]
        self.pipeline = Pipeline(transformer, sinks, self.counters)
        self.sources: list[Source] = [
            self._build_source(source_id, cfg)
            for source_id, cfg in zip(component_ids(config.sources), config.sources, strict=True)
        ]
        self._registry: CollectorRegistry | None = None
        self.admin: AdminServer | None = None
        if config.admin.enabled:
            self.admin = AdminServer(ready=lambda: self.ready, registry=self._get_registry)
        self.ready = False

    def _get_registry(self) -> CollectorRegistry:
        # Built on the first scrape: prometheus_client stays off the start-up path.
        if self._registry is None:
            self._registry = build_registry(self.counters)
        return self._registry

    def _build_source(self, source_id: str, cfg: TcpSource | HttpSource | FileSource) -> Source:
        if isinstance(cfg, TcpSource):
            host, port = parse_hostport(cfg.listen)
            return tcp_source.TcpSource(
                source_id, host, port, self.pipeline, max_line_bytes=cfg.max_line_bytes
            )
        if isinstance(cfg, HttpSource):
            host, port = parse_hostport(cfg.listen)
            return http_source.HttpSource(
                source_id, host, port, self.pipeline, max_body_bytes=cfg.max_body_bytes
            )
        return file_source.FileSource(source_id, cfg, self.pipeline)

    async def start(self) -> dict[str, str]:
        """Start everything; return what each component listens on or watches."""
        self.pipeline.start()
        started: list[Source] = []
        listening: dict[str, str] = {}
        try:
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
            if self.admin is not None:
                await self.admin.close()
            await self.pipeline.close()
            raise
        self.ready = True
        return listening

    async def stop(self) -> None:
        self.ready = False
        results = await asyncio.gather(*(s.stop() for s in self.sources), return_exceptions=True)
        for source, result in zip(self.sources, results, strict=True):
            if isinstance(result, Exception):  # keep shutting down: the sinks still need a flush
                log.error("source failed to stop", extra={"component": source.id}, exc_info=result)
        await self.pipeline.close()
        if self.admin is not None:
            await self.admin.close()
