"""The pure prober workers, driven with made-up times (nothing sleeps)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from podkit.manifest.probe_spec import (
    ExecAction,
    GRPCAction,
    HTTPGetAction,
    ProbeKind,
    ProbeSpec,
    ProbeSpecError,
    TCPSocketAction,
)
from podkit.runtime.probes import ContainerProbes, ProbeWorker, kill_message

HTTP: dict[str, Any] = {"httpGet": {"path": "/healthz", "port": 8080}}


def spec(**fields: Any) -> ProbeSpec:
    return ProbeSpec.from_k8s({**HTTP, **fields})


def worker(kind: ProbeKind = "liveness", **fields: Any) -> ProbeWorker:
    return ProbeWorker(kind, spec(**fields), started_at=100.0, container="app")


# --- parsing ----------------------------------------------------------------------------------


def test_kubernetes_defaults() -> None:
    s = ProbeSpec.from_k8s({"tcpSocket": {"port": 80}})
    assert (
        s.initial_delay_seconds,
        s.period_seconds,
        s.timeout_seconds,
        s.success_threshold,
        s.failure_threshold,
        s.termination_grace_period_seconds,
    ) == (0, 10, 1, 1, 3, None)
    assert s.handler == TCPSocketAction(port=80)
    # Kubernetes defaulting treats an explicit 0 as "unset".
    assert ProbeSpec.from_k8s({"tcpSocket": {"port": 80}, "periodSeconds": 0}).period_seconds == 10


def test_every_handler_kind() -> None:
    h = ProbeSpec.from_k8s(
        {
            "httpGet": {
                "port": "http",
                "httpHeaders": [{"name": "Host", "value": "x"}, {"name": "A", "value": "b"}],
                "scheme": "HTTPS",
                "host": "10.0.0.2",
            },
            "terminationGracePeriodSeconds": 5,
        },
        "liveness",
    )
    assert h.handler == HTTPGetAction(
        port="http", path="/", host="10.0.0.2", scheme="HTTPS", headers=(("Host", "x"), ("A", "b"))
    )
    assert h.handler_kind == "httpGet" and h.named_port == "http"
    assert h.termination_grace_period_seconds == 5
    e = ProbeSpec.from_k8s({"exec": {"command": ["cat", "/tmp/healthy"]}})
    assert e.handler == ExecAction(("cat", "/tmp/healthy")) and e.handler_kind == "exec"
    g = ProbeSpec.from_k8s({"grpc": {"port": 2379}})
    assert g.handler == GRPCAction(port=2379, service="") and g.named_port is None


@pytest.mark.parametrize(
    ("probe", "kind", "field", "reason"),
    [
        ({}, None, "", "must specify a handler type"),
        ({**HTTP, "tcpSocket": {"port": 1}}, None, "tcpSocket", "more than 1 handler"),
        ({**HTTP, "successThreshold": 2}, "liveness", "successThreshold", "must be 1"),
        ({**HTTP, "successThreshold": 2}, "startup", "successThreshold", "must be 1"),
        ({**HTTP, "terminationGracePeriodSeconds": 3}, "readiness", "terminationGrace", "not be"),
        ({**HTTP, "periodSeconds": -1}, None, "periodSeconds", "greater than or equal to 0"),
        ({**HTTP, "timeoutSeconds": "1s"}, None, "timeoutSeconds", "must be an integer"),
        ({**HTTP, "terminationGracePeriodSeconds": 0}, None, "terminationGrace", "at least 1"),
        ({"httpGet": {"port": 70000}}, None, "httpGet.port", "between 1 and 65535"),
        ({"httpGet": {"port": "8080"}}, None, "httpGet.port", "not a valid port name"),
        ({"httpGet": {"port": 80, "scheme": "FTP"}}, None, "httpGet.scheme", "HTTPS"),
        ({"grpc": {"port": "grpc"}}, None, "grpc.port", "must be a port number"),
        ({"exec": {"command": []}}, None, "exec.command", "required"),
        ({"tcpSocket": {}}, None, "tcpSocket.port", "required"),
    ],
)
def test_bad_probe_names_the_field(
    probe: dict[str, Any], kind: ProbeKind | None, field: str, reason: str
) -> None:
    with pytest.raises(ProbeSpecError) as info:
        ProbeSpec.from_k8s(probe, kind)
    assert info.value.field.startswith(field) and reason in info.value.reason


def test_container_probes_prefix_the_field() -> None:
    with pytest.raises(ProbeSpecError, match=r"^livenessProbe\.successThreshold: must be 1"):
        ContainerProbes.from_k8s(
            {"name": "app", "livenessProbe": {**HTTP, "successThreshold": 2}}, 0
        )


# --- schedule ---------------------------------------------------------------------------------


def test_initial_delay_then_every_period() -> None:
    w = worker(initialDelaySeconds=5, periodSeconds=2)
    assert not w.due(104.9) and w.next_due(100.0) == 105.0
    assert w.due(105.0)
    w.record(True, 105.1)  # the probe took 0.1 s; the phase stays on whole periods
    assert w.next_due(105.1) == 107.0 and not w.due(106.9) and w.due(107.0)
    w.record(True, 110.5)  # a run that overran skips the ticks it missed
    assert w.next_due(110.5) == 111.0


def test_no_initial_delay_runs_at_start() -> None:
    assert worker().due(100.0)


# --- thresholds -------------------------------------------------------------------------------


def test_liveness_restarts_after_failure_threshold_consecutive_failures() -> None:
    w = worker(failureThreshold=3)
    d1 = w.record(False, 100, "HTTP probe failed with statuscode: 500")
    assert not d1.restart and not d1.changed
    assert [e.message for e in d1.events] == [
        "Liveness probe failed: HTTP probe failed with statuscode: 500"
    ]
    assert d1.events[0].reason == "Unhealthy" and d1.events[0].type == "Warning"
    assert not w.record(False, 110).restart
    d3 = w.record(False, 120, "boom")
    assert d3.restart and d3.grace_period is None
    assert d3.events[-1].reason == "Killing" and d3.events[-1].type == "Normal"
    assert d3.events[-1].message == "Container app failed liveness probe, will be restarted"


def test_a_success_breaks_the_run_of_failures() -> None:
    w = worker(failureThreshold=2)
    w.record(False, 100)
    assert w.record(True, 110).events == ()
    assert not w.record(False, 120).restart
    assert w.record(False, 130).restart


def test_worker_holds_after_restart_and_resets_on_new_container() -> None:
    w = worker(failureThreshold=1, terminationGracePeriodSeconds=7)
    d = w.record(False, 100)
    assert d.restart and d.grace_period == 7
    assert not w.due(1000) and w.next_due(1000) == math.inf  # nothing probes a dying container
    w.restarted(200.0)
    assert w.due(200.0) and w.result is True
    # Counting starts over: a threshold of 1 restarts again on the next failure, not before.
    assert w.record(False, 200).restart


def test_reset_forgets_partial_failures() -> None:
    w = worker(failureThreshold=3)
    w.record(False, 100)
    w.record(False, 110)
    w.restarted(200.0)
    assert not w.record(False, 200).restart
    assert not w.record(False, 210).restart
    assert w.record(False, 220).restart


def test_readiness_starts_not_ready_and_follows_thresholds() -> None:
    w = worker("readiness", successThreshold=2, failureThreshold=2)
    assert w.result is False
    assert w.record(True, 100).ready is None  # one success is not enough
    assert w.record(True, 110).ready is True
    assert w.record(True, 120).ready is None  # no change, nothing to report
    assert w.record(False, 130).ready is None
    d = w.record(False, 140, "dial tcp 127.0.0.1:8080: connect: connection refused")
    assert d.ready is False and not d.restart
    assert d.events[0].message.startswith("Readiness probe failed: dial tcp")
    assert w.record(True, 150).ready is None
    assert w.record(True, 160).ready is True


def test_readiness_never_restarts() -> None:
    w = worker("readiness", failureThreshold=1)
    w.record(True, 100)
    d = w.record(False, 110)
    assert d.ready is False and not d.restart and w.due(120)


def test_warning_is_a_success_with_an_event() -> None:
    w = worker("readiness")
    d = w.record(True, 100, "Probe terminated redirects", warning=True)
    assert d.ready is True
    assert [(e.reason, e.message) for e in d.events] == [
        ("ProbeWarning", "Readiness probe warning: Probe terminated redirects")
    ]


def test_kill_message_without_restart() -> None:
    assert (
        kill_message("web", "startup", will_restart=False) == "Container web failed startup probe"
    )


# --- startup gating ---------------------------------------------------------------------------


def container(**probes: dict[str, Any]) -> ContainerProbes:
    return ContainerProbes.from_k8s({"name": "app", **probes}, started_at=0.0)


def test_startup_holds_back_liveness_and_readiness() -> None:
    c = container(
        startupProbe={**HTTP, "periodSeconds": 1, "failureThreshold": 30},
        livenessProbe={**HTTP, "periodSeconds": 10},
        readinessProbe={**HTTP, "periodSeconds": 5},
    )
    assert not c.started and not c.ready
    assert [w.kind for w in c.due(0.0)] == ["startup"]
    assert c.next_due(0.0) == 0.0
    for t in range(4):
        assert [w.kind for w in c.due(float(t))] == ["startup"]
        assert not c.record("startup", False, float(t)).changed
    assert c.due(14.0) == [c.workers["startup"]]  # liveness's ticks at 0 and 10 were skipped
    d = c.record("startup", True, 14.0)
    assert d.started and c.started and not c.ready
    # The startup worker is done; readiness runs at once, liveness on its next tick (20).
    assert [w.kind for w in c.due(14.0)] == ["readiness"]
    assert c.workers["liveness"].next_due(14.0) == 20.0
    assert c.record("readiness", True, 14.0).ready is True and c.ready
    assert c.next_due(14.0) == 19.0
    assert sorted(w.kind for w in c.due(20.0)) == ["liveness", "readiness"]


def test_startup_failure_restarts_and_regates() -> None:
    c = container(
        startupProbe={**HTTP, "failureThreshold": 2, "periodSeconds": 1},
        livenessProbe=HTTP,
    )
    c.record("startup", False, 0.0)
    d = c.record("startup", False, 1.0)
    assert d.restart and d.events[-1].message == (
        "Container app failed startup probe, will be restarted"
    )
    assert c.due(100.0) == [] and c.next_due(100.0) == math.inf
    c.restarted(50.0)
    assert [w.kind for w in c.due(50.0)] == ["startup"] and not c.started
    assert c.record("startup", True, 50.0).started
    # Liveness's tick at 50 passed while it was gated: its first run is the next one.
    assert c.due(50.0) == [] and [w.kind for w in c.due(60.0)] == ["liveness"]


def test_liveness_failure_holds_every_worker_until_restart() -> None:
    c = container(livenessProbe={**HTTP, "failureThreshold": 1}, readinessProbe=HTTP)
    assert c.started and not c.ready
    c.record("readiness", True, 0.0)
    assert c.record("liveness", False, 0.0).restart
    assert c.due(100.0) == []
    c.restarted(30.0)
    assert not c.ready and len(c.due(30.0)) == 2


def test_no_probes_means_started_and_ready() -> None:
    c = container()
    assert c.started and c.ready and c.next_due(0.0) == math.inf


def test_late_result_after_hold_changes_nothing() -> None:
    c = container(livenessProbe={**HTTP, "failureThreshold": 1}, readinessProbe=HTTP)
    c.record("liveness", False, 0.0)
    d = c.record("readiness", True, 0.5)  # was already running when liveness failed
    assert not d.changed
