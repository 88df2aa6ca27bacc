"""Parse, timestamp and enrich a batch of events in place. Pure logic (no I/O).

Per event: the message is parsed (TransformConfig.parse) and the fields merged into the event,
then the event's own timestamp (time_key) replaces the received time. Per batch, once: pod
metadata ("kubernetes") and the static add_fields go into `batch.common`, so a batch of any size
costs one small dict for them. With `parse: raw` and no time_key there is no per-event work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from podkit.common.podinfo import PodInfo
from podkit.images.log_agent.event import ID_KEY, Batch, Event
from podkit.images.log_agent.parsers import (
    COMMON_LOG_KEYS,
    compile_regex,
    parse_common_log,
    parse_json_object,
    parse_regex,
)
from podkit.images.log_agent.timestamps import TimeParser
from podkit.images.log_agent.transform_config import TransformConfig

# Where each parser's records usually keep their own time, tried in this order.
_JSON_TIME_KEYS = ("time", "timestamp", "@timestamp")
_DEFAULT_TIME_KEYS: dict[str, tuple[str, ...]] = {
    "raw": (),
    "json": _JSON_TIME_KEYS,
    "common_log": ("time_local",),
    "auto": (*_JSON_TIME_KEYS, "time_local"),  # a JSON sender's time is the more precise one
    "regex": ("time",),
}

Fields = dict[str, Any]


def kubernetes_metadata(pod: PodInfo, container_name: str | None = None) -> dict[str, Any]:
    """Fluent Bit kubernetes-filter names, which dashboards and queries already use."""
    return {
        "pod_name": pod.pod_name,
        "namespace_name": pod.namespace,
        "pod_id": pod.pod_uid,
        "labels": dict(pod.labels),
        "container_name": container_name or pod.container_name,
        "host": pod.node_name,
    }


def _json_fields(text: str) -> Fields | None:
    """A JSON object line's fields; a text "message" (else "log") is the event's message."""
    fields = parse_json_object(text)
    if fields is None:
        return None
    message = fields.get("message")
    if not isinstance(message, str):
        # Not text: the raw line (which holds it) stays the message.
        fields.pop("message", None)
        log = fields.get("log")
        if isinstance(log, str):
            fields["message"] = fields.pop("log")
    return fields


def _auto_fields(text: str) -> Fields | None:
    """JSON when the line is an object; then its message, if an access-log line, is parsed too.

    (simple-webapp ships its access lines wrapped in JSON: {"message": "<CLF line>", ...}.)
    """
    fields = _json_fields(text) if text.startswith("{") else None
    if fields is not None:
        text = fields.get("message", text)
    access = parse_common_log(text)
    if access is None:
        return fields
    if fields is None:
        return access
    fields.update(access)
    return fields


class Transformer:
    """Applies one TransformConfig to batches; counts what it could not parse.

    Events and `common` stay disjoint: a parsed field whose key is also in `common` (source,
    file, kubernetes, an add_fields key...) is dropped from the event, so static fields win.
    time, message and _id are always per-event; a parsed "time" or "_id" never replaces them
    (the timestamp goes through time_key instead).
    """

    def __init__(
        self, cfg: TransformConfig, pod: PodInfo, container_name: str | None = None
    ) -> None:
        self.parse_failures = 0
        self.time_failures = 0
        self._pod = pod
        self._container_name = container_name
        self._own = kubernetes_metadata(pod)  # built once; batches share its labels dict
        self._add_fields = dict(cfg.add_fields)
        self._time = TimeParser(cfg.time_format, cfg.timezone)
        self._time_keys = (cfg.time_key,) if cfg.time_key else _DEFAULT_TIME_KEYS[cfg.parse]
        self._parse = cfg.parse
        self._parse_one: Callable[[str], Fields | None] | None = None
        if cfg.parse == "json":
            self._parse_one = _json_fields
        elif cfg.parse == "auto":
            self._parse_one = _auto_fields
        elif cfg.parse == "regex":
            assert cfg.regex is not None  # TransformConfig requires it
            pattern = compile_regex(cfg.regex)
            self._parse_one = lambda text: parse_regex(pattern, text)

    def apply(self, batch: Batch) -> None:
        """Parse, timestamp and enrich the batch in place (events and common)."""
        common = batch.common
        source_k8s = common.get("kubernetes")
        if not isinstance(source_k8s, dict):
            source_k8s = {}
        common["kubernetes"] = self._kubernetes(source_k8s, None)
        if self._add_fields:
            common.update(self._add_fields)

        senders: list[tuple[Event, str]] = []
        if self._parse == "common_log":
            self._apply_common_log(batch.events, common)
        elif self._parse_one is not None:
            senders = self._apply_parsed(batch.events, common, self._parse_one)
        elif self._time_keys:
            self._apply_time_only(batch.events)
        if senders:
            self._per_sender_kubernetes(batch, source_k8s, senders)

    # ---- per event ---------------------------------------------------------------------------

    def _apply_common_log(self, events: list[Event], common: Event) -> None:
        """The access-log hot path: one regex match, one dict, one cached time lookup a line."""
        parse = parse_common_log
        to_time = self._time
        (time_key,) = self._time_keys
        clash = COMMON_LOG_KEYS & common.keys()
        parse_failures = time_failures = 0
        for event in events:
            fields = parse(event["message"])
            if fields is None:
                parse_failures += 1
                continue
            value = fields.get(time_key)
            if clash:
                for key in clash:
                    fields.pop(key, None)
            event.update(fields)
            if value is not None:
                time_failures += _set_time(event, to_time(value))
        self.parse_failures += parse_failures
        self.time_failures += time_failures

    def _apply_parsed(
        self, events: list[Event], common: Event, parse: Callable[[str], Fields | None]
    ) -> list[tuple[Event, str]]:
        """JSON, auto and regex; returns the events that named their container."""
        count_failures = self._parse != "auto"  # auto falls back to raw by design
        to_time = self._time
        time_keys = self._time_keys
        common_keys = common.keys()
        senders: list[tuple[Event, str]] = []
        parse_failures = time_failures = 0
        for event in events:
            fields = parse(event["message"])
            if fields is None:
                parse_failures += count_failures
                continue
            message = fields.pop("message", None)
            if isinstance(message, str):
                event["message"] = message
            sender = fields.get("container")
            if isinstance(sender, str) and sender:
                del fields["container"]
                senders.append((event, sender))
            value = None
            for key in time_keys:
                value = fields.get(key)
                if value is not None:
                    break
            fields.pop("time", None)
            fields.pop(ID_KEY, None)
            if not common_keys.isdisjoint(fields):
                for key in common_keys & fields.keys():
                    del fields[key]
            event.update(fields)
            if value is not None:
                time_failures += _set_time(event, to_time(value))
        self.parse_failures += parse_failures
        self.time_failures += time_failures
        return senders

    def _apply_time_only(self, events: list[Event]) -> None:
        """parse: raw with a time_key: the field comes from the source itself."""
        to_time = self._time
        (key,) = self._time_keys
        time_failures = 0
        for event in events:
            value = event.get(key)
            if value is not None:
                time_failures += _set_time(event, to_time(value))
        self.time_failures += time_failures

    # ---- pod metadata ------------------------------------------------------------------------

    def _kubernetes(self, source: dict[str, Any], sender: str | None) -> dict[str, Any]:
        """The source's kubernetes keys win (None counts as missing); ours fill the rest.

        A node-level collector's batch may be about another pod: then only the node (host) and
        an explicitly configured container_name are ours to fill, never our pod's identity.
        """
        own = self._own
        if self._names_other_pod(source):
            filled: dict[str, Any] = {"host": own["host"]}
            fallback = self._container_name
        else:
            filled = dict(own)
            fallback = self._container_name or self._pod.container_name
        for key, value in source.items():
            if value is not None:
                filled[key] = value
        filled["container_name"] = sender or source.get("container_name") or fallback
        return filled

    def _names_other_pod(self, source: dict[str, Any]) -> bool:
        pod = self._pod
        uid = source.get("pod_id")
        if uid is not None and pod.pod_uid is not None:
            return bool(uid != pod.pod_uid)
        for key, ours in (("pod_name", pod.pod_name), ("namespace_name", pod.namespace)):
            theirs = source.get(key)
            if theirs is not None and ours is not None and theirs != ours:
                return True
        return False

    def _per_sender_kubernetes(
        self, batch: Batch, source: dict[str, Any], senders: list[tuple[Event, str]]
    ) -> None:
        """Events that named their container get that container_name.

        When they all name the same one it stays in `common`; otherwise "kubernetes" moves into
        each event (one shared dict per container name) and leaves `common`.
        """
        names = {name for _, name in senders}
        if len(names) == 1 and len(senders) == len(batch.events):
            batch.common["kubernetes"] = self._kubernetes(source, names.pop())
            return
        default = batch.common.pop("kubernetes")
        by_name = {name: self._kubernetes(source, name) for name in names}
        named = {id(event): by_name[name] for event, name in senders}
        for event in batch.events:
            event["kubernetes"] = named.get(id(event), default)


def _set_time(event: Event, stamp: str | None) -> int:
    """Use a parsed timestamp as the event's time; 1 (a failure to count) when there is none."""
    if stamp is None:
        return 1
    event["time"] = stamp
    return 0
