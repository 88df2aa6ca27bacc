"""simple-webapp settings: defaults < --config YAML < SIMPLE_WEBAPP_* env < plain env < flags.

| setting          | flag               | env            | default          |
|------------------|--------------------|----------------|------------------|
| port             | --port             | PORT           | 8080             |
| host             | --host             | HOST           | 0.0.0.0          |
| access_log_dir   | --access-log-dir   | ACCESS_LOG_DIR | (none: no file)  |
| log_agent_addr   | --log-agent-addr   | LOG_AGENT_ADDR | 127.0.0.1:5170   |
| upstream_url     | --upstream-url     | UPSTREAM_URL   | (none)           |
| log_agent_queue  |                    |                | 10000 lines      |
| shutdown_timeout |                    |                | 0.5 seconds      |

`log_agent_addr` set to "" or "off" disables shipping access lines to the log agent.
`upstream_url` (http://HOST:PORT) is where GET /api/call?path=/x sends its outbound request:
usually an ambassador or adapter container on the pod's localhost.
Every setting can also come from the YAML file or SIMPLE_WEBAPP_<NAME> (values read as JSON
when they parse as JSON, as in common/config.py).

Validated by hand rather than with pydantic: these six flat fields do not need it, and importing
pydantic and building the model cost simple-webapp ~0.15 s of start-up on a small machine.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podkit.common.config import ConfigError, env_loc, env_value, format_path, read_yaml_mapping
from podkit.common.log_shipper import parse_agent_addr

ENV_PREFIX = "SIMPLE_WEBAPP_"
PLAIN_ENV = {
    "port": "PORT",
    "host": "HOST",
    "access_log_dir": "ACCESS_LOG_DIR",
    "log_agent_addr": "LOG_AGENT_ADDR",
    "upstream_url": "UPSTREAM_URL",
}


@dataclass(frozen=True)
class WebappSettings:
    port: int = 8080
    host: str = "0.0.0.0"
    access_log_dir: str | None = None
    log_agent_addr: str = "127.0.0.1:5170"
    upstream_url: str = ""
    log_agent_queue: int = 10_000  # lines held for the agent
    shutdown_timeout: float = 0.5  # seconds for in-flight requests


def _got(value: Any) -> str:
    shown = repr(value)
    return f" (got {shown})" if len(shown) <= 80 else ""


def _as_int(value: Any, lo: int, hi: int | None) -> int:
    # Lax like the other images' configs: 8080, "8080" and 8080.0 all mean 8080.
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    span = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
    if number is None or number < lo or (hi is not None and number > hi):
        raise ValueError(f"must be a whole number {span}{_got(value)}")
    return number


def _port(value: Any) -> int:
    return _as_int(value, 0, 65535)


def _queue(value: Any) -> int:
    return _as_int(value, 1, None)


def _seconds(value: Any) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not number >= 0 or number == float("inf"):  # `not >=` catches NaN
        raise ValueError(f"must be a number of seconds, 0 or more{_got(value)}")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string{_got(value)}")
    return value


def _optional_dir(value: Any) -> str | None:
    return None if value is None else (_text(value) or None)  # "" means no file, as unset


def _upstream_url(value: Any) -> str:
    text = _text(value)
    if text and not text.startswith("http://"):
        raise ValueError(f"must be an http://HOST:PORT URL{_got(value)}")
    return text


def _agent_addr(value: Any) -> str:
    text = _text(value)
    parse_agent_addr(text)  # raises ValueError naming the problem and the value
    return text


# field -> check that returns the typed value or raises ValueError with the reason
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "port": _port,
    "host": _text,
    "access_log_dir": _optional_dir,
    "log_agent_addr": _agent_addr,
    "upstream_url": _upstream_url,
    "log_agent_queue": _queue,
    "shutdown_timeout": _seconds,
}
assert set(_CHECKS) == {f.name for f in dataclasses.fields(WebappSettings)}


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simple-webapp",
        description="The demo web server of podkit's examples: logs every request.",
        epilog="Each flag has an environment variable: PORT, HOST, ACCESS_LOG_DIR, "
        "LOG_AGENT_ADDR, UPSTREAM_URL.",
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
    parser.add_argument(
        "--upstream-url",
        metavar="URL",
        help="where GET /api/call?path=/x sends its request (env UPSTREAM_URL), e.g. the "
        "ambassador's egress listener http://127.0.0.1:9000",
    )
    return parser


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> WebappSettings:
    """Settings from every layer; raises ConfigError naming the flag, variable or file.

    Later layers replace earlier ones; each final value is checked once, and an error names the
    layer it came from. Every problem is reported, one a line.
    """
    raw: dict[str, tuple[Any, str]] = {}  # field -> (value, where it came from)
    errors: list[str] = []
    if args.config is not None:
        where = str(args.config)
        for key, value in read_yaml_mapping(Path(where)).items():
            if key in _CHECKS:
                raw[key] = (value, where)
            else:
                errors.append(f"{where}: {key}: unknown field (check the spelling)")
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX)):
        loc = env_loc(name[len(ENV_PREFIX) :])
        if not loc:
            continue
        origin = f"environment {name}"
        first = loc[0]
        if not isinstance(first, str) or first not in _CHECKS:
            errors.append(f"{origin}: {format_path(loc[:1])}: unknown field (check the spelling)")
        elif len(loc) > 1:
            errors.append(f"{origin}: {format_path(loc)}: {first} has no fields inside it")
        else:
            raw[first] = (env_value(environ[name]), origin)
    for key, env_name in PLAIN_ENV.items():
        if env_name in environ:
            raw[key] = (environ[env_name], f"environment {env_name}")
        flag_value = getattr(args, key)
        if flag_value is not None:
            raw[key] = (flag_value, f"--{key.replace('_', '-')}")

    values: dict[str, Any] = {}
    for key in _CHECKS:  # in declaration order, so errors read like the table above
        if key not in raw:
            continue
        value, origin = raw[key]
        try:
            values[key] = _CHECKS[key](value)
        except ValueError as exc:
            errors.append(f"{origin}: {key}: {exc}")
    if errors:
        raise ConfigError("\n".join(errors))
    return WebappSettings(**values)
