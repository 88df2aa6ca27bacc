"""The kubelet's prober workers as pure state machines (no I/O, no clock: time is passed in).

One `ProbeWorker` models pkg/kubelet/prober/worker.go for one probe of one container:

- The first run is due at `started_at + initialDelaySeconds`, then every `periodSeconds` on that
  same phase (a run that overruns its period skips the missed ticks, like Go's time.Ticker).
- A result only takes effect after `failureThreshold` consecutive failures or `successThreshold`
  consecutive successes (worker.go's lastResult/resultRun).
- Initial results: readiness starts as failure (not ready until the first success), liveness as
  success, startup as unknown (`None`).
- A liveness or startup result of failure asks for the container to be killed (`restart=True`);
  the worker then holds (probes nothing) until `restarted()` tells it about the new container.
- A startup probe that succeeds once is done (`started=True`) until the container restarts.
- Liveness and readiness workers of a container that has a startup probe are *gated by startup*:
  they probe nothing until the startup probe succeeds. Then readiness runs at once (the kubelet
  triggers it manually for a started, not-ready container) and liveness on its next tick.
  `ContainerProbes` does this wiring; a runtime that drives single workers calls `ungate()`.

The kubelet's event texts are produced here so every caller words them the same way. Durations
are the manifest's; a runtime that scales time for tests feeds a scaled clock or a scaled spec
(`dataclasses.replace`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
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


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeEvent:
    """A Kubernetes Event the runtime should record for the container."""

    reason: str  # Unhealthy | ProbeWarning | Killing
    message: str
    type: Literal["Normal", "Warning"] = "Warning"


def failed_message(kind: ProbeKind, output: str) -> str:
    """`Liveness probe failed: HTTP probe failed with statuscode: 500` (kubelet prober.go)."""
    return f"{kind.capitalize()} probe failed: {output}"


def kill_message(container: str, kind: ProbeKind, will_restart: bool = True) -> str:
    """The Killing event text (kuberuntime_manager.go); will_restart False under Never."""
    message = f"Container {container} failed {kind} probe"
    return f"{message}, will be restarted" if will_restart else message


# --- workers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What one probe result changed; the runtime acts only on what is set."""

    ready: bool | None = None  # readiness only: the container's `ready` became this
    started: bool = False  # startup only: the probe succeeded, the container is `started`
    restart: bool = False  # liveness/startup: kill the container (restartPolicy decides the rest)
    grace_period: int | None = None  # with restart: the probe-level terminationGracePeriodSeconds
    events: tuple[ProbeEvent, ...] = ()

    @property
    def changed(self) -> bool:
        return self.ready is not None or self.started or self.restart


_INITIAL: dict[ProbeKind, bool | None] = {"readiness": False, "liveness": True, "startup": None}


class ProbeWorker:
    """One probe of one container. Drive it with `due(now)` / `next_due(now)` and `record()`."""

    def __init__(
        self,
        kind: ProbeKind,
        spec: ProbeSpec,
        started_at: float,
        *,
        container: str = "",
        gated_by_startup: bool = False,
    ) -> None:
        if kind not in _INITIAL:
            raise ValueError(f"unknown probe kind {kind!r}")
        self.kind: ProbeKind = kind
        self.spec = spec
        self.container = container
        self.restarted(started_at, gated_by_startup=gated_by_startup)

    def restarted(self, started_at: float, *, gated_by_startup: bool | None = None) -> None:
        """A new instance of the container started: forget everything, start over."""
        self.started_at = started_at
        if gated_by_startup is not None:
            self._gated_default = gated_by_startup
        self.gated = self._gated_default
        self.result: bool | None = _INITIAL[self.kind]  # what the kubelet's results manager holds
        self.on_hold = False  # a restart was asked for; nothing to probe until restarted()
        self.done = False  # startup succeeded: this worker has nothing more to do
        self._last: bool | None = None
        self._run = 0
        self._next = started_at + self.spec.initial_delay_seconds

    @property
    def active(self) -> bool:
        return not (self.gated or self.on_hold or self.done)

    def ungate(self, now: float) -> None:
        """The container's startup probe succeeded: begin probing (readiness at once)."""
        if not self.gated:
            return
        self.gated = False
        if self.kind == "readiness":
            self._next = max(now, self._next)
        else:
            self._skip_to(now)

    def next_due(self, now: float) -> float:
        """When the next probe should run (may be <= now: run it now); inf if none will."""
        return self._next if self.active else math.inf

    def due(self, now: float) -> bool:
        return self.active and now >= self._next

    def _skip_to(self, now: float) -> None:
        # Stay on the started_at + delay + k * period phase, dropping ticks already past.
        if now >= self._next:
            period = self.spec.period_seconds
            self._next += period * (math.floor((now - self._next) / period) + 1)

    def record(
        self, success: bool, now: float, output: str = "", *, warning: bool = False
    ) -> Decision:
        """Take the result of a probe run that finished at `now`.

        `output` is the prober's message; `warning` marks a success the kubelet reports as a
        ProbeWarning event (an HTTP redirect it did not follow).
        """
        self._skip_to(now)
        events: list[ProbeEvent] = []
        if not success:
            events.append(ProbeEvent("Unhealthy", failed_message(self.kind, output)))
        elif warning:
            events.append(
                ProbeEvent("ProbeWarning", f"{self.kind.capitalize()} probe warning: {output}")
            )
        if not self.active:
            return Decision(events=tuple(events))  # a late result for a run no longer wanted

        if self._last == success:
            self._run += 1
        else:
            self._last, self._run = success, 1
        threshold = self.spec.success_threshold if success else self.spec.failure_threshold
        if self._run < threshold:
            return Decision(events=tuple(events))

        previous, self.result = self.result, success
        if self.kind == "readiness":
            ready = success if success != previous else None
            return Decision(ready=ready, events=tuple(events))
        if not success:
            # worker.go: hold until the container is restarted, and count from zero again.
            self.on_hold, self._run = True, 0
            will = kill_message(self.container or "?", self.kind)
            return Decision(
                restart=True,
                grace_period=self.spec.termination_grace_period_seconds,
                events=(*events, ProbeEvent("Killing", will, type="Normal")),
            )
        if self.kind == "startup":
            self.done = True
            return Decision(started=True, events=tuple(events))
        return Decision(events=tuple(events))


@dataclass
class ContainerProbes:
    """The probe workers of one container, with startup gating wired in.

    `started` and `ready` are the container status fields as the kubelet computes them for a
    *running* container (no startup probe: started; no readiness probe: ready once started);
    a container that is not running is neither, whatever they say. After a restart decision
    every worker holds until `restarted(started_at)` is called for the new instance.
    """

    container: str
    workers: dict[ProbeKind, ProbeWorker] = field(default_factory=dict)

    @classmethod
    def from_k8s(cls, container: dict[str, Any], started_at: float) -> ContainerProbes:
        """Build from a raw Kubernetes Container dict (raises ProbeSpecError, field prefixed)."""
        name = str(container.get("name", ""))
        specs: dict[ProbeKind, ProbeSpec] = {}
        for kind in ("startup", "readiness", "liveness"):
            raw = container.get(f"{kind}Probe")
            if raw is None:
                continue
            try:
                specs[kind] = ProbeSpec.from_k8s(raw, kind)
            except ProbeSpecError as exc:
                where = f"{kind}Probe.{exc.field}" if exc.field else f"{kind}Probe"
                raise ProbeSpecError(where, exc.reason) from None
        return cls.from_specs(name, specs, started_at)

    @classmethod
    def from_specs(
        cls, container: str, specs: dict[ProbeKind, ProbeSpec], started_at: float
    ) -> ContainerProbes:
        gated = "startup" in specs
        workers = {
            kind: ProbeWorker(
                kind,
                spec,
                started_at,
                container=container,
                gated_by_startup=gated and kind != "startup",
            )
            for kind, spec in specs.items()
        }
        return cls(container, workers)

    @property
    def started(self) -> bool:
        startup = self.workers.get("startup")
        return startup is None or startup.result is True

    @property
    def ready(self) -> bool:
        readiness = self.workers.get("readiness")
        if not self.started:
            return False
        return readiness is None or readiness.result is True

    def due(self, now: float) -> list[ProbeWorker]:
        return [w for w in self.workers.values() if w.due(now)]

    def next_due(self, now: float) -> float:
        return min((w.next_due(now) for w in self.workers.values()), default=math.inf)

    def record(
        self, kind: ProbeKind, success: bool, now: float, output: str = "", *, warning: bool = False
    ) -> Decision:
        decision = self.workers[kind].record(success, now, output, warning=warning)
        if decision.started:
            for w in self.workers.values():
                w.ungate(now)
        if decision.restart:
            # The container is going away: no other probe of it matters until restarted().
            for w in self.workers.values():
                w.on_hold = True
        return decision

    def restarted(self, started_at: float) -> None:
        for w in self.workers.values():
            w.restarted(started_at)
