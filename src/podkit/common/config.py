"""One YAML config file per image, validated by a pydantic model, with env overrides.

Precedence, lowest first: the model's defaults, the YAML file (`--config`), then environment
variables that set single settings.

Environment override scheme
---------------------------
`<PREFIX><PATH>=<value>`, where PATH is the setting's field path, upper-cased, with `__` between
levels and list indexes as numbers. For the log-agent (prefix `LOG_AGENT_`):

    LOG_AGENT_ADMIN__LISTEN=127.0.0.1:2021          admin.listen
    LOG_AGENT_SOURCES__0__LISTEN=127.0.0.1:6000     sources[0].listen
    LOG_AGENT_TRANSFORMS__PARSE=raw                 transforms.parse
    LOG_AGENT_TRANSFORMS__ADD_FIELDS__ENV=dev       transforms.add_fields.env

Values are read as JSON when they parse as JSON (`5`, `true`, `["a","b"]`), else as a plain string.
Mapping keys are lower-cased. A list index may be one past the end to append an item. Lists given
in the file replace the default list; mappings are merged key by key.

Errors
------
Every problem raises ConfigError whose message names the file (or the environment variable), the
field path (`sources[0].listen`) and the reason, one problem a line. Images print it to stderr and
exit 2.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    # pydantic costs ~0.1 s to import: only the images that validate a model pay for it
    # (simple-webapp uses the helpers here without it).
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")
Loc = tuple[str | int, ...]

EXIT_CONFIG_ERROR = 2


class ConfigError(Exception):
    """A config that cannot be used; str() is the whole user-facing message."""


def format_path(loc: Iterable[str | int]) -> str:
    """('sources', 0, 'listen') -> 'sources[0].listen'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load(
    model: type[M],
    path: str | os.PathLike[str] | None,
    *,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
    ignore_env: Iterable[str] = (),
) -> M:
    """Build `model` from defaults, the YAML file at `path` (if any) and env overrides.

    `ignore_env` names variables that share the prefix but are not settings of this image.
    """
    from pydantic import ValidationError

    env = os.environ if environ is None else environ
    ignored = set(ignore_env)
    overrides = sorted(n for n in env if n.startswith(env_prefix) and n not in ignored)
    if path is None and not overrides:
        # Nothing to validate: the defaults are the model's own. Skipping validation keeps
        # schema building (tens of ms with defer_build models) off the start-up path.
        return model.model_construct()
    where = str(path) if path is not None else "(defaults)"
    data: dict[str, Any] = model().model_dump(mode="json", by_alias=True)
    if path is not None:
        _deep_merge(data, read_yaml_mapping(Path(path)))

    origins: dict[Loc, str] = {}
    for name in overrides:
        loc = env_loc(name[len(env_prefix) :])
        if not loc:
            continue
        try:
            _set_path(data, loc, env_value(env[name]))
        except _PathError as exc:
            raise ConfigError(f"environment {name}: {format_path(loc)}: {exc}") from None
        origins[loc] = f"environment {name}"

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, data, where, origins)) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config file is not UTF-8 text: {exc.reason}") from None
    import yaml  # only when there is a file: ~20 ms of start-up otherwise

    try:
        doc = yaml.load(text, Loader=_strict_loader())
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {at}invalid YAML: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: (top level): must be a mapping, got {type(doc).__name__}")
    return doc


class _DuplicateKey(Exception):
    pass


@functools.cache
def _strict_loader() -> Any:
    """PyYAML's safe loader (the C one where there is one), refusing a key given twice in one
    mapping: plain PyYAML keeps the last and a whole section (a second `sinks:`) silently
    replaces the first."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Strict(base):  # type: ignore[misc,valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # an unhashable key: construct_mapping says so
                    continue
                if first != line:
                    raise _DuplicateKey(
                        f"line {line}: duplicate key {key!r} (first given on line {first})"
                    )
            return super().construct_mapping(node, deep)

    return Strict


class _PathError(Exception):
    pass


def env_loc(rest: str) -> Loc:
    """'SOURCES__0__LISTEN' (the part after the prefix) -> ('sources', 0, 'listen')."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in rest.split("__") if p)


def env_value(raw: str) -> Any:
    """An override's value: JSON when it parses as JSON (`5`, `true`), else the plain string."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _set_path(data: dict[str, Any], loc: Loc, value: Any) -> None:
    node: Any = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, list):
            if not isinstance(part, int):
                raise _PathError("is a list: use a number to pick an item")
            if part > len(node):
                raise _PathError(f"index {part} is past the end of the list ({len(node)} items)")
            if part == len(node):
                node.append(value if last else {})
            elif last:
                node[part] = value
            node = node[part]
        elif isinstance(node, dict):
            key: str | int = part
            if last:
                node[key] = value
            else:
                if not isinstance(node.get(key), dict | list):
                    node[key] = {}
                node = node[key]
        else:
            raise _PathError("cannot set a field inside a plain value")


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _user_loc(loc: Loc, data: Any) -> Loc:
    """Drop pydantic's union tags ('sources', 0, 'file', 'paths') so paths match the YAML."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if (
            isinstance(node, dict)
            and isinstance(part, str)
            and part not in node
            and node.get("type") == part
        ):
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _format_validation_error(
    exc: ValidationError, data: Any, where: str, origins: Mapping[Loc, str]
) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = _user_loc(tuple(err["loc"]), data)
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            # The tag field is what the user got wrong; say so in their terms.
            tag_field = str(ctx.get("discriminator", "type")).strip("'")
            loc = (*loc, tag_field)
            if kind == "union_tag_invalid":
                expected = ctx.get("expected_tags")
                reason = f"unknown {tag_field} {ctx.get('tag')!r}, expected one of {expected}"
            else:
                reason = f"missing field {tag_field!r}"
        elif kind == "extra_forbidden":
            reason = "unknown field (check the spelling)"
        else:
            reason = err["msg"].removeprefix("Value error, ")
            shown = repr(err.get("input"))
            # Our own validators' messages already quote the value.
            if kind not in ("missing", "value_error", "assertion_error") and len(shown) <= 80:
                reason += f" (got {shown})"
        source = where
        for origin_loc, origin in origins.items():
            if loc[: len(origin_loc)] == origin_loc:
                source = origin
        # A whole-file check names its own field paths in the reason.
        lines.append(f"{source}: {format_path(loc)}: {reason}" if loc else f"{source}: {reason}")
    return "\n".join(lines)


def format_hostport(host: str, port: int) -> str:
    """('::1', 80) -> '[::1]:80'; ('example.com', 80) -> 'example.com:80'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostport(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'127.0.0.1:5170' -> ('127.0.0.1', 5170); ':5170' uses default_host; '[::1]:80' works."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"invalid address {value!r}: expected HOST:PORT")
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {value!r}: expected a number 0-65535")
    return host, int(port_text)
