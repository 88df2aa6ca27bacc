"""`simple-webapp` / `python -m podkit.images.webapp`: the demo web server of the examples."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from podkit.common import logging as podkit_logging
from podkit.common import signals
from podkit.common.config import EXIT_CONFIG_ERROR, ConfigError
from podkit.common.log_shipper import LogShipper, parse_agent_addr
from podkit.common.podinfo import PodInfo
from podkit.images.webapp.access_log import AccessLog, AccessLogFile
from podkit.images.webapp.app import WebappState, build_app
from podkit.images.webapp.settings import WebappSettings, build_arg_parser, resolve


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    try:
        settings = resolve(args, os.environ)
    except ConfigError as exc:
        print(f"simple-webapp: config error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    podkit_logging.setup("simple-webapp")
    return signals.run(lambda stop: serve(settings, stop))


async def serve(settings: WebappSettings, stop: asyncio.Event) -> int:
    log = logging.getLogger("simple-webapp")
    pod = PodInfo.from_env()
    agent = parse_agent_addr(settings.log_agent_addr)
    shipper = None
    if agent is not None:
        shipper = LogShipper(*agent, max_queue=settings.log_agent_queue)
        shipper.start()
    log_file = None
    if settings.access_log_dir:
        try:
            log_file = AccessLogFile(Path(settings.access_log_dir) / "access.log")
        except OSError as exc:
            print(f"simple-webapp: cannot open access log: {exc}", file=sys.stderr)
            return 1
    access = AccessLog(
        file=log_file, shipper=shipper, container=pod.container_name or "simple-webapp"
    )
    state = WebappState(pod, access)
    runner = web.AppRunner(
        build_app(state),
        access_log_class=access.logger_class(),
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        print(
            f"simple-webapp: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        await runner.cleanup()
        return 1
    state.ready = True
    log.info(
        "serving",
        extra={
            # the bound port, which differs from the setting when that is 0 (any free port)
            "listen": [f"{a[0]}:{a[1]}" for a in runner.addresses],
            "access_log": str(log_file.path) if log_file else None,
            "log_agent": settings.log_agent_addr if shipper else None,
        },
    )
    await stop.wait()
    state.ready = False  # readiness fails first, as a pod being deleted does
    log.info("shutting down")
    await runner.cleanup()
    if shipper is not None:
        await shipper.close(timeout=0.5)
    if log_file is not None:
        log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
