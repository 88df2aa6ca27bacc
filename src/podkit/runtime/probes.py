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
from dataclasses import dataclass, field
from typing import Any, Literal

from podkit.manifest.probe_spec import ProbeKind, ProbeSpec, ProbeSpecError

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
