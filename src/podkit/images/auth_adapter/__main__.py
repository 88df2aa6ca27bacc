"""`auth-adapter` / `python -m podkit.images.auth_adapter`: OAuth2 for the app's outgoing calls."""

from __future__ import annotations

from podkit.common import early_stop

early_stop.install()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import functools  # noqa: E402
import os  # noqa: E402
import ssl  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

_STARTED = time.monotonic()
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from typing import Any  # noqa: E402

import orjson  # noqa: E402

from podkit.common import config as config_loader  # noqa: E402
from podkit.common import logging as podkit_logging  # noqa: E402
from podkit.common import signals  # noqa: E402
from podkit.common.admin import AdminServer  # noqa: E402
from podkit.common.gc_freeze import freeze_startup_objects  # noqa: E402
from podkit.common.httpserver import Request, Response  # noqa: E402
from podkit.images.auth_adapter.bearer import BearerCredentials  # noqa: E402
from podkit.images.auth_adapter.config import AuthAdapterConfig, proxy_config  # noqa: E402
from podkit.images.auth_adapter.token_metrics import TokenMetrics  # noqa: E402
from podkit.images.auth_adapter.token_source import TokenSources  # noqa: E402
from podkit.proxy.credentials import CredentialProvider  # noqa: E402
from podkit.proxy.server import Proxy  # noqa: E402

ENV_PREFIX = "AUTH_ADAPTER_"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="auth-adapter",
        description=(
            "Takes the app's plain HTTP requests on the pod's localhost and sends them to "
            "external APIs with OAuth2 tokens. Admin (/healthz, /readyz, /metrics, /stats) on "
            "127.0.0.1:9902 by default."
        ),
        epilog=f"Environment: {ENV_PREFIX}<PATH> overrides one setting, e.g. "
        f"{ENV_PREFIX}LISTEN=127.0.0.1:9000 or {ENV_PREFIX}UPSTREAMS__0__URL=https://api.local/.",
    )
    parser.add_argument("--config", help="the YAML config file")
    parser.add_argument("--dry-run", action="store_true", help="check the config, print it, exit")
    return parser.parse_args(argv)


def load(path: str | None) -> tuple[AuthAdapterConfig, TokenSources, Proxy]:
    """The config, its token sources and the proxy; raises ConfigError naming the field."""
    config = config_loader.load(AuthAdapterConfig, path, env_prefix=ENV_PREFIX)
    where = path or "(defaults)"  # a config from the environment alone has no file
    if not config.upstreams:
        raise config_loader.ConfigError(f"{where}: upstreams: at least one upstream is needed")
    sources = TokenSources(metrics=TokenMetrics())
    credentials: dict[str, CredentialProvider] = {}
    for i, up in enumerate(config.upstreams):
        try:
            source = sources.get(up.name, up.oauth2)
        except ValueError as exc:
            raise config_loader.ConfigError(f"{where}: upstreams[{i}].oauth2: {exc}") from None
        credentials[up.name] = BearerCredentials(up.name, source, retry_on_401=up.retry_on_401)
    return config, sources, Proxy(proxy_config(config), credentials)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, sources, proxy = load(args.config)
    except config_loader.ConfigError as exc:
        print(f"auth-adapter: config error:\n{exc}", file=sys.stderr)
        return config_loader.EXIT_CONFIG_ERROR
    if args.dry_run:
        print(config.model_dump_json(indent=2))
        return 0
    log = podkit_logging.setup("auth-adapter", config.log_level)

    def ready() -> bool:
        return proxy.ready and (sources.ready or not config.readiness.require_token)

    def stats() -> dict[str, Any]:
        out = proxy.stats()
        out["tokens"] = [source.status() for source in sources.all()]
        return out

    def admin_extra(request: Request) -> Response | None:
        if request.path == "/stats":
            return Response(
                200, orjson.dumps(stats(), option=orjson.OPT_INDENT_2), "application/json"
            )
        return None

    @functools.cache
    def registry():  # type: ignore[no-untyped-def]
        from prometheus_client import CollectorRegistry

        from podkit.proxy.metrics import ProxyCollector

        reg = CollectorRegistry()
        reg.register(ProxyCollector(proxy.stats))
        reg.register(sources.metrics)
        return reg

    admin = AdminServer(ready=ready, registry=registry, extra=admin_extra)

    async def serve(stop: asyncio.Event) -> int:
        host, port = config_loader.parse_hostport(config.admin.listen)
        try:
            await admin.start(host, port)
            await proxy.start()
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot start", extra={"error": str(exc)})
            print(f"auth-adapter: cannot start: {exc}", file=sys.stderr)
            await proxy.close()
            await admin.close()
            return 1
        await sources.start()  # first tokens now, then refreshed ahead of expiry
        freeze_startup_objects()
        log.info(
            "listening",
            extra={
                "listen": config.listen,
                "admin": f"{host}:{admin.port}",
                "upstreams": [u.name for u in config.upstreams],
                "startup_ms": round((time.monotonic() - _STARTED) * 1000, 1),
            },
        )
        await stop.wait()
        log.info("draining", extra={"drain_time_s": config.drain_time})
        await proxy.drain(config.drain_time)
        await sources.aclose()
        await admin.close()
        log.info("stopped")
        return 0

    return signals.run(serve)


if __name__ == "__main__":
    sys.exit(main())
