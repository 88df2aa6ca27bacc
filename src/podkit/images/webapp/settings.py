"""simple-webapp settings: defaults < --config YAML < SIMPLE_WEBAPP_* env < plain env < flags.

| setting        | flag               | env            | default          |
|----------------|--------------------|----------------|------------------|
| port           | --port             | PORT           | 8080             |
| host           | --host             | HOST           | 0.0.0.0          |
| access_log_dir | --access-log-dir   | ACCESS_LOG_DIR | (none: no file)  |
| log_agent_addr | --log-agent-addr   | LOG_AGENT_ADDR | 127.0.0.1:5170   |

`log_agent_addr` set to "" or "off" disables shipping access lines to the log agent.
Every setting can also come from the YAML file or SIMPLE_WEBAPP_<NAME> (see common/config.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from podkit.common.config import apply_overrides, load
from podkit.common.log_shipper import parse_agent_addr

ENV_PREFIX = "SIMPLE_WEBAPP_"
PLAIN_ENV = {
    "port": "PORT",
    "host": "HOST",
    "access_log_dir": "ACCESS_LOG_DIR",
    "log_agent_addr": "LOG_AGENT_ADDR",
}


class WebappSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = Field(default=8080, ge=0, le=65535)
    host: str = "0.0.0.0"
    access_log_dir: str | None = None
    log_agent_addr: str = "127.0.0.1:5170"
    log_agent_queue: int = Field(default=10_000, gt=0, description="lines held for the agent")
    shutdown_timeout: float = Field(default=0.5, ge=0, description="seconds for in-flight requests")

    @field_validator("access_log_dir")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("log_agent_addr")
    @classmethod
    def _valid_addr(cls, value: str) -> str:
        parse_agent_addr(value)
        return value


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simple-webapp",
        description="The demo web server of podkit's examples: logs every request.",
        epilog="Each flag has an environment variable: PORT, HOST, ACCESS_LOG_DIR, LOG_AGENT_ADDR.",
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    parser.add_argument("--port", type=int, help="port to serve on (env PORT, default 8080)")
    parser.add_argument("--host", help="address to bind (env HOST, default 0.0.0.0)")
    parser.add_argument(
        "--access-log-dir",
        metavar="DIR",
        help="also append access lines to DIR/access.log (env ACCESS_LOG_DIR)",
    )
    parser.add_argument(
        "--log-agent-addr",
        metavar="HOST:PORT",
        help="send access lines to the log agent here; 'off' disables "
        "(env LOG_AGENT_ADDR, default 127.0.0.1:5170)",
    )
    return parser


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> WebappSettings:
    """Settings from every layer; raises ConfigError naming the flag, variable or file."""
    settings = load(WebappSettings, args.config, env_prefix=ENV_PREFIX, environ=environ)
    overrides: dict[str, tuple[Any, str]] = {}
    for name, env_name in PLAIN_ENV.items():
        if env_name in environ:
            overrides[name] = (environ[env_name], f"environment {env_name}")
        flag_value = getattr(args, name)
        if flag_value is not None:
            overrides[name] = (flag_value, f"--{name.replace('_', '-')}")
    return apply_overrides(settings, overrides)
