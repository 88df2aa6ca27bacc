"""`ambassador` / `python -m podkit.images.ambassador`: the pod's proxy sidecar."""

from __future__ import annotations

from podkit.common import early_stop

early_stop.install()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import functools  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import ssl  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

_STARTED = time.monotonic()
# SIGHUP's default action ends the process: one that comes while starting is kept for later
# (and one held back by whoever started us is delivered now).
_EARLY_RELOADS: list[int] = []
signal.signal(signal.SIGHUP, lambda signum, _frame: _EARLY_RELOADS.append(signum))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

from podkit.common import config as config_loader  # noqa: E402
from podkit.common import logging as podkit_logging  # noqa: E402
from podkit.common import signals  # noqa: E402
from podkit.common.admin import AdminServer  # noqa: E402
from podkit.common.gc_freeze import freeze_startup_objects  # noqa: E402
from podkit.common.httpserver import Request, Response  # noqa: E402
from podkit.images.ambassador import workers as workers_mod  # noqa: E402
from podkit.proxy.config import ProxyConfig  # noqa: E402
from podkit.proxy.server import Proxy  # noqa: E402
from podkit.proxy.stats import merge  # noqa: E402

ENV_PREFIX = "AMBASSADOR_"
WATCH_EVERY = 1.0  # seconds between looks at the config file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ambassador",
        description=(
            "Proxy beside the app: listeners -> routes -> clusters -> endpoints, from one YAML "
            "file. Admin (/ready, /stats, /metrics, /healthz) on 127.0.0.1:9901 by default."
        ),
        epilog=f"Environment: {ENV_PREFIX}<PATH> overrides one setting, e.g. "
        f"{ENV_PREFIX}ADMIN__LISTEN=127.0.0.1:9902 or {ENV_PREFIX}LISTENERS__0__LISTEN=:8443.",
    )
    parser.add_argument("--config", help="the YAML config file")
    parser.add_argument("--dry-run", action="store_true", help="check the config, print it, exit")
    # Internal: how worker 0 starts the others (config `workers`).
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stats-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_config(path: str | None) -> ProxyConfig:
    config = config_loader.load(ProxyConfig, path, env_prefix=ENV_PREFIX)
    if not config.listeners:
        where = path or "(defaults)"
        raise config_loader.ConfigError(f"{where}: listeners: at least one listener is needed")
    return config


async def _watch(path: str | None, wanted: asyncio.Event) -> None:
    """A changed config file (a ConfigMap update swaps a symlink) asks for a reload."""
    if path is None:
        return

    def stamp() -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    last = stamp()
    while True:
        await asyncio.sleep(WATCH_EVERY)
        now = stamp()
        if now is not None and now != last:
            last = now
            wanted.set()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except config_loader.ConfigError as exc:
        print(f"ambassador: config error:\n{exc}", file=sys.stderr)
        return config_loader.EXIT_CONFIG_ERROR
    if args.dry_run:
        print(config.model_dump_json(indent=2))
        return 0
    worker = args.worker
    if worker:
        workers_mod.die_with_parent()
    log = podkit_logging.setup("ambassador", config.log_level)
    current = {"proxy": Proxy(config)}
    pool = (
        workers_mod.Workers(args.config, config.workers)
        if not worker and config.workers > 1
        else None
    )

    def stats() -> dict[str, Any]:
        """This process's counters, plus the other workers' when there are several."""
        out = current["proxy"].stats()
        if pool is not None:
            for snap in pool.snapshots():
                merge(out, snap["stats"])
        return out

    def ready() -> bool:
        return current["proxy"].ready and (pool is None or pool.all_ready())

    def admin_extra(request: Request) -> Response | None:
        if request.path == "/ready":
            return Response.text(200, "ready\n") if ready() else Response.text(503, "not ready\n")
        if request.path == "/stats":
            return Response(
                200, orjson.dumps(stats(), option=orjson.OPT_INDENT_2), "application/json"
            )
        return None

    @functools.cache  # one registry; its collector reads the current stats on each scrape
    def registry():  # type: ignore[no-untyped-def]
        from prometheus_client import CollectorRegistry

        from podkit.proxy.metrics import ProxyCollector

        reg = CollectorRegistry()
        reg.register(ProxyCollector(stats))
        return reg

    admin = AdminServer(ready=ready, registry=registry, extra=admin_extra)

    async def reload(old: Proxy) -> Proxy:
        """A new proxy from the file as it is now, on the same listening sockets; the old one
        drains in the background. A bad file or a failed start keeps the old proxy serving."""
        try:
            new_config = load_config(args.config)
        except config_loader.ConfigError as exc:
            log.error("config reload failed, keeping the running config", extra={"error": str(exc)})
            return old
        for key in ("admin", "workers"):
            if getattr(new_config, key) != getattr(old.config, key):
                log.warning(f"{key} changes only on restart")
        new = Proxy(new_config)
        try:
            await new.start(previous=old)
        except (OSError, ssl.SSLError) as exc:
            await new.close()
            log.error("config reload failed, keeping the running config", extra={"error": str(exc)})
            return old
        asyncio.get_running_loop().create_task(old.drain(old.config.drain_time, close_idle=False))
        log.info("config reloaded", extra={"listeners": [f"{h}:{p}" for h, p in new.addresses()]})
        return new

    async def serve(stop: asyncio.Event) -> int:
        loop = asyncio.get_running_loop()
        wanted = asyncio.Event()  # a reload: before "ready" is logged, so none is lost after it
        loop.add_signal_handler(signal.SIGHUP, wanted.set)
        if _EARLY_RELOADS:
            wanted.set()
        host, port = config_loader.parse_hostport(config.admin.listen)
        proxy = current["proxy"]
        try:
            if not worker:
                await admin.start(host, port)
            await proxy.start()
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot start", extra={"error": str(exc)})
            print(f"ambassador: cannot start: {exc}", file=sys.stderr)
            await proxy.close()
            await admin.close()
            return 1
        freeze_startup_objects()
        extra: dict[str, Any] = {
            "listeners": [f"{h}:{p}" for h, p in proxy.addresses()],
            "startup_ms": round((time.monotonic() - _STARTED) * 1000, 1),
        }
        if worker:
            extra["worker"] = worker
            loop.create_task(
                workers_mod.keep_writing(Path(args.stats_dir), worker, lambda: current["proxy"])
            )
        else:
            extra["admin"] = f"{host}:{admin.port}"
            if pool is not None:
                pool.start()
                extra["workers"] = config.workers
        log.info("ready" if proxy.ready else "listening (endpoints not resolved yet)", extra=extra)
        watcher = loop.create_task(_watch(args.config, wanted))
        stopping = loop.create_task(stop.wait())
        while not stop.is_set():
            reloading = loop.create_task(wanted.wait())
            await asyncio.wait({stopping, reloading}, return_when=asyncio.FIRST_COMPLETED)
            reloading.cancel()
            if wanted.is_set() and not stop.is_set():
                wanted.clear()
                current["proxy"] = await reload(current["proxy"])
                if pool is not None:
                    pool.signal(signal.SIGHUP)
        watcher.cancel()
        loop.remove_signal_handler(signal.SIGHUP)
        proxy = current["proxy"]
        log.info("draining", extra={"drain_time_s": proxy.config.drain_time})
        if pool is not None:
            await asyncio.gather(
                proxy.drain(proxy.config.drain_time), pool.stop(proxy.config.drain_time + 1.0)
            )
        else:
            await proxy.drain(proxy.config.drain_time)
        await admin.close()
        log.info("stopped")
        return 0

    return signals.run(serve)


if __name__ == "__main__":
    sys.exit(main())
