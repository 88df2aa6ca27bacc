"""`log-agent` / `python -m podkit.images.log_agent`: the pod's log shipper sidecar."""

from __future__ import annotations

from podkit.common import early_stop

early_stop.install()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

# Measured from here: the `startup_ms` of the "ready" log line.
_STARTED = time.monotonic()
# pydantic scans every installed distribution for plugins before its first validation (~30 ms on
# a small machine); the agent uses none. An explicit setting in the environment still wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from podkit.common import config as config_loader  # noqa: E402
from podkit.common import logging as podkit_logging  # noqa: E402
from podkit.common import signals  # noqa: E402
from podkit.common.podinfo import PodInfo  # noqa: E402
from podkit.images.log_agent.agent import Agent, StartError  # noqa: E402
from podkit.images.log_agent.config import ENV_PREFIX, FOREIGN_ENV, AgentConfig  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="log-agent",
        description=(
            "Collect logs from the pod's containers (TCP, HTTP, files), parse and enrich them "
            "with pod metadata, and print them as JSON lines. Without --config it listens on "
            "127.0.0.1:5170 (TCP lines) and 127.0.0.1:9880 (HTTP POST), admin on 127.0.0.1:2020."
        ),
        epilog=(
            f"Environment: {ENV_PREFIX}<PATH> overrides one setting, e.g. "
            f"{ENV_PREFIX}ADMIN__LISTEN=127.0.0.1:2021 or {ENV_PREFIX}SOURCES__0__LISTEN=:6000. "
            "Pod metadata comes from POD_NAME, POD_NAMESPACE, POD_UID, NODE_NAME, CONTAINER_NAME "
            "(downward API) or the PODKIT_* variables podkit injects."
        ),
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate the config, print it as JSON, and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_loader.load(
            AgentConfig, args.config, env_prefix=ENV_PREFIX, ignore_env=FOREIGN_ENV
        )
    except config_loader.ConfigError as exc:
        print(f"log-agent: config error:\n{exc}", file=sys.stderr)
        return config_loader.EXIT_CONFIG_ERROR
    if args.dry_run:
        print(config.model_dump_json(indent=2))
        return 0
    log = podkit_logging.setup("log-agent", config.log_level)
    agent = Agent(config, PodInfo.from_env())

    async def serve(stop: asyncio.Event) -> int:
        try:
            listening = await agent.start()
        except StartError as exc:
            log.error(str(exc))
            print(f"log-agent: {exc}", file=sys.stderr)
            return 1
        startup_ms = round((time.monotonic() - _STARTED) * 1000, 1)
        log.info("ready", extra={"listening": listening, "startup_ms": startup_ms})
        await stop.wait()
        log.info("shutting down")
        await agent.stop()
        return 0

    return signals.run(serve)


if __name__ == "__main__":
    sys.exit(main())
