"""Turn raw records into events: decode, parse, enrich with pod metadata, add static fields.

Pure logic (no I/O), so every rule here is unit-testable with plain values.
"""

from __future__ import annotations

from typing import Any, Literal

from podkit.common.clock import rfc3339
from podkit.common.podinfo import PodInfo
from podkit.images.log_agent.config import RESERVED_FIELDS
from podkit.images.log_agent.event import Event, RawRecord
from podkit.images.log_agent.parsers import parse_common_log, parse_json_object

ParseMode = Literal["auto", "raw", "json", "common_log"]

# Keys a JSON record may use for its log line (Docker and Fluent Bit use "log").
_MESSAGE_KEYS = ("message", "log")


def kubernetes_metadata(pod: PodInfo) -> dict[str, Any]:
    """Fluent Bit kubernetes-filter names, which dashboards and queries already use."""
    return {
        "pod_name": pod.pod_name,
        "namespace_name": pod.namespace,
        "pod_id": pod.pod_uid,
        "labels": dict(pod.labels),
        "container_name": pod.container_name,
        "host": pod.node_name,
    }


class Transformer:
    def __init__(self, *, parse: ParseMode, add_fields: dict[str, Any], pod: PodInfo) -> None:
        self.parse = parse
        self.add_fields = dict(add_fields)
        self._kubernetes = kubernetes_metadata(pod)
        self._own_container = pod.container_name
        self.parse_failures = 0

    def apply(self, rec: RawRecord) -> Event:
        message = rec.message
        fields = rec.fields
        parse = self.parse
        if fields is None and parse in ("auto", "json"):
            fields = parse_json_object(message)
            if fields is None and parse == "json":
                self.parse_failures += 1

        extra: dict[str, Any] = {}
        time_value: str | None = None
        container = rec.container if rec.source == "file" else self._own_container
        if fields:
            extra = dict(fields)
            for key in _MESSAGE_KEYS:
                inner = extra.get(key)
                if isinstance(inner, str):
                    message = inner
                    del extra[key]
                    break
            sender = extra.pop("container", None)
            if isinstance(sender, str) and sender:
                container = sender
            sent_time = extra.pop("time", None)
            if isinstance(sent_time, str) and sent_time:
                time_value = sent_time
            for key in RESERVED_FIELDS & extra.keys():
                del extra[key]

        if parse in ("auto", "common_log"):
            access = parse_common_log(message)
            if access is not None:
                extra.update(access)
            elif parse == "common_log":
                self.parse_failures += 1

        event: Event = {"time": time_value or rfc3339(rec.received), "message": message}
        event["source"] = rec.source
        if rec.file is not None:
            event["file"] = rec.file
        kubernetes = dict(self._kubernetes)
        kubernetes["container_name"] = container
        event["kubernetes"] = kubernetes
        if extra:
            event.update(extra)
        if self.add_fields:
            event.update(self.add_fields)
        return event
