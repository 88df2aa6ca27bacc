"""The OTLP sink (Vector `opentelemetry`, Fluent Bit `opentelemetry`): OTLP/HTTP with JSON.

    POST {endpoint}/v1/logs   (application/json; ExportLogsServiceRequest, OTLP's JSON mapping)
    {"resourceLogs": [{"resource": {"attributes": [k8s.pod.name, …]},
                       "scopeLogs": [{"scope": {"name": "podkit.log-agent"},
                                      "logRecords": [{"timeUnixNano": "…", "body": …}, …]}]}]}

Resource (one per distinct pod/container, events grouped under it): `service.name` (the config's
`service_name`, else the pod label app.kubernetes.io/name, else the container name, else
"unknown_service"), k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.container.name,
k8s.node.name and k8s.pod.label.<key>, from the event's "kubernetes".

Log record: timeUnixNano from "time" (left out, meaning unknown, when it does not parse: the text
is then kept as attribute "time"), observedTimeUnixNano = when the batch was encoded, body =
"message", severityText/severityNumber from the `level_field` (text as logged; number by the OTel
data model's ranges: trace 1, debug 5, info 9, notice 10, warn 13, error 17, fatal 21; pino and
bunyan numbers 10..60 too), attributes = every other field as an OTLP AnyValue, "file" as
log.file.path and "_id" as log.record.uid (semantic-convention names).

A 200 answer with `partialSuccess.rejectedLogRecords` > 0: that many were refused for good,
counted under "otlp_partial_success"; the others were taken.

Payload: one item a line, `<resource attributes JSON>\x1f<log record JSON>`; the request groups
the items by resource when it is sent (`export_body`), so any run of items is a request.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import orjson
from pydantic import Field

from podkit.images.log_agent.event import ID_KEY, Batch, Event
from podkit.images.log_agent.sinks.base import Rejected
from podkit.images.log_agent.sinks.http import unix_nanos
from podkit.images.log_agent.sinks.http_client import HttpClient, HttpClientConfig, base_url

LOGS_PATH = "/v1/logs"
SCOPE = {"name": "podkit.log-agent"}
RESOURCE_FIELDS = (
    ("namespace_name", "k8s.namespace.name"),
    ("pod_name", "k8s.pod.name"),
    ("pod_id", "k8s.pod.uid"),
    ("container_name", "k8s.container.name"),
    ("host", "k8s.node.name"),
)
RENAMED = {"file": "log.file.path", ID_KEY: "log.record.uid"}
# Text levels as logged; the syslog names as OpenTelemetry's own SDKs map them.
SEVERITY_NUMBERS: dict[str, int] = {
    "trace": 1, "debug": 5, "info": 9, "information": 9, "informational": 9, "notice": 10,
    "warn": 13, "warning": 13, "error": 17, "err": 17, "critical": 18, "crit": 18,
    "fatal": 21, "alert": 21, "panic": 21, "emergency": 22, "emerg": 22,
}  # fmt: skip
# pino and bunyan write numbers.
NUMERIC_LEVELS = {10: 1, 20: 5, 30: 9, 40: 13, 50: 17, 60: 21}
SHORT_NAMES = {1: "TRACE", 5: "DEBUG", 9: "INFO", 13: "WARN", 17: "ERROR", 21: "FATAL"}
INT64 = 2**63
NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}

KeyValue = dict[str, Any]
Resource = tuple[tuple[str, str], ...]


class OtlpConfig(HttpClientConfig):
    type: Literal["otlp"]
    name: str | None = None
    endpoint: str = Field(
        default="http://localhost:4318", description=f"base URL; {LOGS_PATH} is appended"
    )
    service_name: str | None = Field(
        default=None,
        description="default: pod label app.kubernetes.io/name, else the container name",
    )
    level_field: str = Field(default="level", description="the event field holding the level")


def any_value(value: object) -> dict[str, Any]:
    """A JSON value as an OTLP AnyValue (protobuf JSON mapping: int64 as a decimal string)."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):  # before int: bool is an int
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)} if -INT64 <= value < INT64 else {"stringValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": NON_FINITE.get(value, "NaN")}
    if value is None:
        return {}  # an AnyValue with nothing set is OTLP's null
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [key_value(str(k), v) for k, v in value.items()]}}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def key_value(key: str, value: object) -> KeyValue:
    return {"key": key, "value": any_value(value)}


def severity(level: object) -> tuple[str, int]:
    """(severityText, severityNumber); 0 is UNSPECIFIED, left out of the record."""
    if isinstance(level, str):
        return level, SEVERITY_NUMBERS.get(level.strip().lower(), 0)
    if isinstance(level, int) and not isinstance(level, bool) and level in NUMERIC_LEVELS:
        number = NUMERIC_LEVELS[level]
        return SHORT_NAMES[number], number
    return str(level), 0


def resource_attributes(kubernetes: object, service_name: str | None) -> Resource:
    k8s: dict[str, Any] = kubernetes if isinstance(kubernetes, dict) else {}
    labels = k8s.get("labels")
    labels = labels if isinstance(labels, dict) else {}
    service = (
        service_name
        or labels.get("app.kubernetes.io/name")
        or k8s.get("container_name")
        or "unknown_service"
    )
    attrs = [("service.name", str(service))]
    attrs += [(name, str(k8s[key])) for key, name in RESOURCE_FIELDS if k8s.get(key)]
    attrs += [(f"k8s.pod.label.{k}", str(v)) for k, v in sorted(labels.items())]
    return tuple(attrs)


class OtlpEncoder:
    def __init__(self, service_name: str | None, level_field: str) -> None:
        self.service_name = service_name
        self.level_field = level_field
        self._skip = {"time", "message", "kubernetes", level_field}

    def _attributes(self, fields: Event) -> list[KeyValue]:
        return [key_value(RENAMED.get(k, k), v) for k, v in fields.items() if k not in self._skip]

    def encode(self, batch: Batch, observed_ns: int | None = None) -> bytes:
        common = batch.common
        observed = str(observed_ns if observed_ns is not None else time.time_ns())
        common_attrs = self._attributes(common)  # shared by every record: built once
        shared_resource = (
            resource_attributes(common["kubernetes"], self.service_name)
            if "kubernetes" in common
            else None
        )
        dumps = orjson.dumps
        keys: dict[Resource, bytes] = {}
        out: list[bytes] = []
        for event in batch.events:
            resource = shared_resource or resource_attributes(
                event.get("kubernetes"), self.service_name
            )
            key = keys.get(resource) or keys.setdefault(
                resource, dumps([key_value(k, v) for k, v in resource]) + b"\x1f"
            )
            out += (key, dumps(self._record(event, common, common_attrs, observed)), b"\n")
        return b"".join(out)

    def _record(
        self, event: Event, common: Event, common_attrs: list[KeyValue], observed: str
    ) -> dict[str, Any]:
        def get(key: str) -> object:
            return event[key] if key in event else common.get(key)

        record: dict[str, Any] = {"observedTimeUnixNano": observed}
        attributes = self._attributes(event)
        when = get("time")
        nanos = unix_nanos(when)
        if nanos is not None:
            record["timeUnixNano"] = str(nanos)
        elif when is not None:
            attributes.append(key_value("time", when))
        level = get(self.level_field)
        if level is not None:
            text, number = severity(level)
            record["severityText"] = text
            if number:
                record["severityNumber"] = number
        if "message" in event or "message" in common:
            record["body"] = any_value(get("message"))
        record["attributes"] = attributes + common_attrs
        return record


def export_body(payload: bytes) -> bytes:
    """The ExportLogsServiceRequest for a payload of items: one resourceLogs per resource, in
    first-seen order, its records in payload order."""
    groups: dict[bytes, list[bytes]] = {}
    for item in payload.splitlines():
        resource, _, record = item.partition(b"\x1f")
        groups.setdefault(resource, []).append(record)
    scope = orjson.dumps(SCOPE)
    body = b",".join(
        b'{"resource":{"attributes":' + resource + b'},"scopeLogs":[{"scope":' + scope
        + b',"logRecords":[' + b",".join(records) + b"]}]}"
        for resource, records in groups.items()
    )  # fmt: skip
    return b'{"resourceLogs":[' + body + b"]}"


def rejected_records(answer: bytes) -> tuple[int, str]:
    """(rejectedLogRecords, errorMessage) of an ExportLogsServiceResponse; (0, "") when none."""
    try:
        data = orjson.loads(answer) if answer.strip() else {}
        partial = data.get("partialSuccess") or {}
        count = int(partial.get("rejectedLogRecords") or 0)  # int64: a string in JSON
        return count, str(partial.get("errorMessage") or "")
    except (ValueError, TypeError, AttributeError):
        return 0, ""  # not JSON: a 2xx says it was taken


class OtlpSink:
    def __init__(self, id: str, cfg: OtlpConfig) -> None:
        self.id = id
        self.cfg = cfg
        self._encoder = OtlpEncoder(cfg.service_name, cfg.level_field)
        self._client = HttpClient(id, cfg)
        self._url = base_url(cfg.endpoint) + LOGS_PATH
        self.batching = cfg.batching()

    def encode(self, batch: Batch) -> bytes:
        return self._encoder.encode(batch)

    async def start(self) -> None:
        await self._client.start()

    async def send(self, payload: bytes) -> Rejected | None:
        answer = await self._client.post(self._url, export_body(payload), "application/json")
        count, _ = rejected_records(answer)
        return {"otlp_partial_success": min(count, payload.count(b"\n"))} if count > 0 else None

    async def close(self) -> None:
        await self._client.close()
