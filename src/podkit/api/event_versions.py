"""events.k8s.io/v1 Events are the core/v1 Events under other field names, as the apiserver
keeps them: one stored object, converted on the way in and out
(pkg/apis/events/v1/conversion.go). Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

# events.k8s.io/v1 name -> core/v1 name, for the fields whose names differ.
RENAMED = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_BACK = {core: v1 for v1, core in RENAMED.items()}


def to_core(event: Obj) -> Obj:
    """An events.k8s.io/v1 Event as core/v1 stores it."""
    out = {RENAMED.get(k, k): v for k, v in event.items()}
    out["apiVersion"] = "v1"
    return out


def from_core(event: Obj) -> Obj:
    """A stored core/v1 Event as events.k8s.io/v1 shows it."""
    out = {_BACK.get(k, k): v for k, v in event.items()}
    out["apiVersion"] = "events.k8s.io/v1"
    return out


def create_problems(event: Obj) -> list[tuple[str, str]]:
    """What the apiserver refuses in a new events.k8s.io/v1 Event (ValidateEventCreate): the
    fields the new API requires, a type of Normal or Warning, and no deprecated fields."""
    problems = [
        (field, "Required value")
        for field in ("eventTime", "reportingController", "reportingInstance", "action", "reason")
        if not event.get(field)
    ]
    if event.get("type") not in ("Normal", "Warning"):
        problems.append(("type", f'Invalid value: "": has invalid value: {event.get("type", "")}'))
    problems += [
        (field, 'Invalid value: "": needs to be unset')
        for field in RENAMED
        if field.startswith("deprecated") and event.get(field)
    ]
    return problems
