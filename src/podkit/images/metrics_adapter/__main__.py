"""`metrics-adapter` / `python -m podkit.images.metrics_adapter`: the app's status as metrics."""

from __future__ import annotations

from podkit.common import early_stop

early_stop.install()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

_STARTED = time.monotonic()
# pydantic scans every installed distribution for plugins before its first validation; we use
# none. An explicit setting in the environment still wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from podkit.common import config as config_loader  # noqa: E402
from podkit.common import logging as podkit_logging  # noqa: E402
from podkit.common import signals  # noqa: E402
from podkit.common.admin import AdminServer  # noqa: E402
from podkit.common.httpserver import HttpServer  # noqa: E402
from podkit.images.metrics_adapter.app import AdapterState, build_handler  # noqa: E402
from podkit.images.metrics_adapter.cache import ScrapeCache  # noqa: E402
from podkit.images.metrics_adapter.config import ENV_PREFIX, AdapterConfig  # noqa: E402
from podkit.images.metrics_adapter.scraper import Scraper  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="metrics-adapter",
        description=(
            "Scrape the app's status (JSON or key=value text, default "
            "http://127.0.0.1:8080/status) and serve it as Prometheus / OpenMetrics on "
            "0.0.0.0:9102/metrics; admin (/healthz, /readyz, /metrics) on 127.0.0.1:9103."
        ),
        epilog=f"Environment: {ENV_PREFIX}<PATH> overrides one setting, e.g. "
        f"{ENV_PREFIX}TARGET__URL=http://127.0.0.1:9000/stats or {ENV_PREFIX}LISTEN=:9200.",
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the config, print it as JSON, and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_loader.load(AdapterConfig, args.config, env_prefix=ENV_PREFIX)
    except config_loader.ConfigError as exc:
        print(f"metrics-adapter: config error:\n{exc}", file=sys.stderr)
        return config_loader.EXIT_CONFIG_ERROR
    if args.dry_run:
        print(config.model_dump_json(indent=2))
        return 0
    log = podkit_logging.setup("metrics-adapter", config.log_level)
    target = config.target
    scraper = Scraper(
        url=target.url,
        headers=dict(target.headers),
        fmt=target.format,
        timeout=target.timeout,
        max_bytes=target.max_body_bytes,
        rules=config.rules(),
        cache=ScrapeCache(ttl=target.cache_ttl, serve_stale_for=target.serve_stale_for),
    )
    state = AdapterState(scraper, config.path)
    page = HttpServer(build_handler(state), max_body=64 * 1024)
    admin = AdminServer(ready=lambda: state.ready, registry=state.registry)

    async def serve(stop: asyncio.Event) -> int:
        host, port = config_loader.parse_hostport(config.listen)
        listening: dict[str, str] = {}
        try:
            await page.start(host, port)
            listening["metrics"] = f"{host}:{page.port}{config.path}"
            if config.admin.enabled:
                admin_host, admin_port = config_loader.parse_hostport(config.admin.listen)
                await admin.start(admin_host, admin_port)
                listening["admin"] = f"{admin_host}:{admin.port}"
        except OSError as exc:
            log.error("cannot start", extra={"error": str(exc)})
            print(f"metrics-adapter: cannot listen: {exc}", file=sys.stderr)
            await page.close(timeout=0)
            await admin.close()
            return 1
        state.ready = True
        log.info(
            "ready",
            extra={
                "listening": listening,
                "target": target.url,
                "metrics": len(config.metrics) or "auto",
                "startup_ms": round((time.monotonic() - _STARTED) * 1000, 1),
            },
        )
        await stop.wait()
        state.ready = False
        log.info("shutting down")
        await page.close(timeout=0.5)  # open page requests finish first (or are cut)
        await admin.close()
        await scraper.close()
        return 0

    return signals.run(serve)


if __name__ == "__main__":
    sys.exit(main())
