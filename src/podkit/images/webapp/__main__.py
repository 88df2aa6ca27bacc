"""`simple-webapp` / `python -m podkit.images.webapp`: the demo web server of the examples."""

from __future__ import annotations

# First of all: podkit starts built-in images with SIGTERM held; take it (exit 0) from here on.
from podkit.common import early_stop

early_stop.install()

import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from podkit.common import logging as podkit_logging  # noqa: E402
from podkit.common import signals  # noqa: E402
from podkit.common.config import EXIT_CONFIG_ERROR, ConfigError  # noqa: E402
from podkit.common.httpserver import HttpServer  # noqa: E402
from podkit.common.log_shipper import LogShipper, parse_agent_addr  # noqa: E402
from podkit.common.podinfo import PodInfo  # noqa: E402
from podkit.images.webapp.access_log import AccessLog, AccessLogFile  # noqa: E402
from podkit.images.webapp.app import MAX_BODY, WebappState, build_handler  # noqa: E402
from podkit.images.webapp.settings import (  # noqa: E402
    WebappSettings,
    build_arg_parser,
    resolve,
)


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
    log_file = None
    if settings.access_log_dir:
        try:
            log_file = AccessLogFile(Path(settings.access_log_dir) / "access.log")
        except OSError as exc:
            print(f"simple-webapp: cannot open access log: {exc}", file=sys.stderr)
            return 1
    agent = parse_agent_addr(settings.log_agent_addr)
    shipper = None
    if agent is not None:
        shipper = LogShipper(*agent, max_queue=settings.log_agent_queue)
        shipper.start()
    access = AccessLog(
        file=log_file, shipper=shipper, container=pod.container_name or "simple-webapp"
    )
    state = WebappState(pod, access, upstream_url=settings.upstream_url)
    server = HttpServer(build_handler(state), max_body=MAX_BODY, on_response=state.on_response)
    try:
        await server.start(settings.host, settings.port)
    except OSError as exc:
        print(
            f"simple-webapp: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        if shipper is not None:
            await shipper.close(timeout=0)  # nothing was logged yet
        if log_file is not None:
            log_file.close()
        return 1
    state.ready = True
    log.info(
        "serving",
        extra={
            # the bound port, which differs from the setting when that is 0 (any free port)
            "listen": [f"{host}:{port}" for host, port in server.addresses],
            "access_log": str(log_file.path) if log_file else None,
            "log_agent": settings.log_agent_addr if shipper else None,
        },
    )
    await stop.wait()
    state.ready = False  # readiness fails first, as a pod being deleted does
    log.info("shutting down")
    await server.close(timeout=settings.shutdown_timeout)
    if shipper is not None:
        await shipper.close(timeout=0.5)
    if log_file is not None:
        log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
