"""A container's probe or lifecycle handler as Kubernetes defines it: parsed and checked from
the manifest (startupProbe, readinessProbe, livenessProbe; postStart/preStop handlers), with the
API server's defaults and its rejections (ProbeSpecError names the field). Pure; the manifest's
checks and the runtime's prober and hooks share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

ProbeKind = Literal["startup", "readiness", "liveness"]
HandlerKind = Literal["exec", "httpGet", "tcpSocket", "grpc"]

HANDLER_KINDS: tuple[HandlerKind, ...] = ("exec", "httpGet", "tcpSocket", "grpc")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class ProbeSpecError(ValueError):
    """A probe Kubernetes would reject; `field` is relative to the probe (e.g. httpGet.port)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class ExecAction:
    command: tuple[str, ...]


@dataclass(frozen=True)
class HTTPGetAction:
    port: int | str  # a number, or the name of one of the container's ports
    path: str = "/"
    host: str | None = None  # None: the pod IP
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()  # in order; a name may repeat


@dataclass(frozen=True)
class TCPSocketAction:
    port: int | str
    host: str | None = None


@dataclass(frozen=True)
class GRPCAction:
    port: int  # numbers only, as in Kubernetes
    service: str = ""


Handler = ExecAction | HTTPGetAction | TCPSocketAction | GRPCAction


@dataclass(frozen=True)
class ProbeSpec:
    handler: Handler
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: int | None = None  # probe-level override of the pod's

    @property
    def handler_kind(self) -> HandlerKind:
        if isinstance(self.handler, ExecAction):
            return "exec"
        if isinstance(self.handler, HTTPGetAction):
            return "httpGet"
        if isinstance(self.handler, TCPSocketAction):
            return "tcpSocket"
        return "grpc"

    @property
    def named_port(self) -> str | None:
        """The port name this probe needs the container to declare, for validation."""
        port = getattr(self.handler, "port", None)
        return port if isinstance(port, str) else None

    @classmethod
    def from_k8s(cls, d: dict[str, Any], kind: ProbeKind | None = None) -> ProbeSpec:
        """Parse a Kubernetes Probe dict with the API server's defaults and validation.

        With `kind`, also the per-kind rules: successThreshold must be 1 for liveness and
        startup, and readiness probes may not set terminationGracePeriodSeconds.
        """
        if not isinstance(d, dict):
            raise ProbeSpecError("", "must be an object")
        present = [k for k in HANDLER_KINDS if d.get(k) is not None]
        if not present:
            raise ProbeSpecError("", "must specify a handler type (exec, httpGet, tcpSocket, grpc)")
        if len(present) > 1:
            raise ProbeSpecError(present[1], "may not specify more than 1 handler type")
        handler = _parse_handler(present[0], d[present[0]])

        # 0 means "use the default" in Kubernetes defaulting; negatives are rejected.
        def num(name: str, default: int) -> int:
            value = _int(d, name, minimum=0)
            return default if value in (None, 0) else value

        tgps = _int(d, "terminationGracePeriodSeconds", minimum=1)
        spec = cls(
            handler=handler,
            initial_delay_seconds=num("initialDelaySeconds", 0),
            period_seconds=num("periodSeconds", 10),
            timeout_seconds=num("timeoutSeconds", 1),
            success_threshold=num("successThreshold", 1),
            failure_threshold=num("failureThreshold", 3),
            termination_grace_period_seconds=tgps,
        )
        if kind in ("liveness", "startup") and spec.success_threshold != 1:
            raise ProbeSpecError("successThreshold", f"must be 1 for {kind} probes")
        if kind == "readiness" and tgps is not None:
            raise ProbeSpecError(
                "terminationGracePeriodSeconds", "must not be set for readinessProbes"
            )
        return spec


def _int(d: dict[str, Any], name: str, minimum: int) -> int | None:
    value = d.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProbeSpecError(name, f"must be an integer, not {value!r}")
    if value < minimum:
        word = "greater than or equal to 0" if minimum == 0 else f"at least {minimum}"
        raise ProbeSpecError(name, f"must be {word}, not {value}")
    return value


def _port(where: str, value: Any, names_allowed: bool = True) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 65535:
            return value
        raise ProbeSpecError(where, f"must be between 1 and 65535, inclusive, not {value}")
    if names_allowed and isinstance(value, str):
        # IANA_SVC_NAME, as Kubernetes validates it: a digits-only string is not a name.
        if (
            len(value) <= 15
            and _PORT_NAME.match(value)
            and "--" not in value
            and any(c.isalpha() for c in value)
        ):
            return value
        raise ProbeSpecError(
            where,
            f"{value!r} is not a valid port name (at most 15 of a-z, 0-9 and '-', "
            "with at least one letter)",
        )
    if value is None:
        raise ProbeSpecError(where, "required")
    raise ProbeSpecError(where, f"must be a port number{' or name' if names_allowed else ''}")


def _opt_str(where: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ProbeSpecError(where, f"must be a string, not {value!r}")


def _parse_handler(kind: HandlerKind, raw: Any) -> Handler:
    if not isinstance(raw, dict):
        raise ProbeSpecError(kind, "must be an object")
    if kind == "exec":
        command = raw.get("command")
        if not command:
            raise ProbeSpecError("exec.command", "required")
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise ProbeSpecError("exec.command", "must be a list of strings")
        return ExecAction(tuple(command))
    if kind == "httpGet":
        scheme = raw.get("scheme") or "HTTP"
        if scheme not in ("HTTP", "HTTPS"):
            raise ProbeSpecError("httpGet.scheme", f'must be "HTTP" or "HTTPS", not {scheme!r}')
        checked_scheme: Literal["HTTP", "HTTPS"] = "HTTPS" if scheme == "HTTPS" else "HTTP"
        path = _opt_str("httpGet.path", raw.get("path")) or "/"
        headers: list[tuple[str, str]] = []
        for i, h in enumerate(raw.get("httpHeaders") or []):
            if not isinstance(h, dict) or not isinstance(h.get("name"), str) or not h["name"]:
                raise ProbeSpecError(f"httpGet.httpHeaders[{i}].name", "required")
            value = h.get("value", "")
            if not isinstance(value, str):
                raise ProbeSpecError(f"httpGet.httpHeaders[{i}].value", "must be a string")
            headers.append((h["name"], value))
        return HTTPGetAction(
            port=_port("httpGet.port", raw.get("port")),
            path=path,
            host=_opt_str("httpGet.host", raw.get("host")),
            scheme=checked_scheme,
            headers=tuple(headers),
        )
    if kind == "tcpSocket":
        return TCPSocketAction(
            port=_port("tcpSocket.port", raw.get("port")),
            host=_opt_str("tcpSocket.host", raw.get("host")),
        )
    port = _port("grpc.port", raw.get("port"), names_allowed=False)
    assert isinstance(port, int)
    return GRPCAction(port=port, service=_opt_str("grpc.service", raw.get("service")) or "")
