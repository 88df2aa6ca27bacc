"""Checks of a Pod's lifecycle fields the schema cannot express: probes, hooks, grace periods.

Each mirrors the API server's validation (pkg/apis/core/validation): a problem names the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from podkit.manifest.document import FieldPath, Manifest
from podkit.manifest.errors import Problem
from podkit.manifest.probe_spec import ProbeSpec, ProbeSpecError

HOOK_HANDLERS = ("exec", "httpGet", "tcpSocket", "sleep")


def lifecycle_problems(
    m: Manifest, spec: dict[str, Any], path: FieldPath, container: dict[str, Any]
) -> Iterator[Problem]:
    yield from _probes(m, path, container)
    yield from _hooks(m, path, container)
    if path[1] == "initContainers" and container.get("restartPolicy") != "Always":
        for kind in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
            if kind in container:
                yield m.problem(
                    path + (kind,),
                    "may not be set for init containers without restartPolicy: Always",
                )


def grace_problems(m: Manifest, spec: dict[str, Any]) -> Iterator[Problem]:
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        yield m.problem(
            ("spec", "terminationGracePeriodSeconds"),
            f"must be greater than or equal to 0 (got {grace})",
        )


def _probes(m: Manifest, path: FieldPath, container: dict[str, Any]) -> Iterator[Problem]:
    port_names = {p.get("name") for p in container.get("ports") or [] if isinstance(p, dict)}
    for kind in ("startup", "readiness", "liveness"):
        raw = container.get(f"{kind}Probe")
        if not isinstance(raw, dict):
            continue
        where = path + (f"{kind}Probe",)
        try:
            probe = ProbeSpec.from_k8s(raw, kind)  # type: ignore[arg-type]
        except ProbeSpecError as exc:
            yield m.problem(where + tuple(exc.field.split(".")) if exc.field else where, exc.reason)
            continue
        name = probe.named_port
        if name is not None and name not in port_names:
            handler = probe.handler_kind
            yield m.problem(
                where + (handler, "port"), f'no containerPort of this container is named "{name}"'
            )


def _hooks(m: Manifest, path: FieldPath, container: dict[str, Any]) -> Iterator[Problem]:
    lifecycle = container.get("lifecycle") or {}
    for hook in ("postStart", "preStop"):
        action = lifecycle.get(hook)
        if action is None:
            continue
        where = path + ("lifecycle", hook)
        handlers = [h for h in HOOK_HANDLERS if h in action]
        if len(handlers) != 1:
            yield m.problem(
                where,
                f"must specify exactly one handler of "
                f"{', '.join(HOOK_HANDLERS)} (got {', '.join(handlers) or 'none'})",
            )
        elif handlers[0] == "sleep":
            seconds = (action["sleep"] or {}).get("seconds")
            if not isinstance(seconds, int) or seconds < 0:
                yield m.problem(where + ("sleep", "seconds"), "must be a non-negative integer")
