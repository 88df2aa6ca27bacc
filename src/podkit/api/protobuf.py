"""Request bodies in Kubernetes' protobuf encoding, for the kinds kubectl sends that way.

kubectl's typed clients (`kubectl create configmap|secret|namespace NAME ...`) POST protobuf
and do not fall back to JSON. Replies stay JSON (kubectl accepts both). The encoding: the
magic bytes `k8s\\0`, then a runtime.Unknown message (1: typeMeta {1: apiVersion, 2: kind},
2: raw, the object's own message, 3: contentEncoding, 4: contentType). The objects' field
numbers come from k8s.io/api and k8s.io/apimachinery's generated.proto. Only the fields a
create can carry are read; an unknown field number with a value is a clear error, never
silently dropped (a zero one, which Go writes for every scalar, is the field's default).
Pure functions.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# A message: field number -> (JSON name, type). Types: "string", "bytes" (base64 in JSON, as
# the JSON encoding of []byte), "int", "bool", a nested message (dict), ("map", value type),
# ("list", item type).
Spec = dict[int, tuple[str, Any]]

_TIME: Spec = {1: ("seconds", "int"), 2: ("nanos", "int")}
_OWNER: Spec = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
OBJECT_META: Spec = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    4: ("selfLink", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    8: ("creationTimestamp", _TIME),
    9: ("deletionTimestamp", _TIME),
    10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", ("map", "string")),
    12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("list", _OWNER)),
    14: ("finalizers", ("list", "string")),
}
_SELECTOR: Spec = {
    1: ("matchLabels", ("map", "string")),
    2: ("matchExpressions", ("list", {1: ("key", "string"), 2: ("operator", "string"),
                                      3: ("values", ("list", "string"))})),
}  # fmt: skip
_QUANTITY: Spec = {1: ("string", "string")}  # resource.Quantity: its string form
_INT_OR_STRING: Spec = {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "string")}
_CONTAINER: Spec = {
    1: ("name", "string"),
    2: ("image", "string"),
    3: ("command", ("list", "string")),
    4: ("args", ("list", "string")),
    5: ("workingDir", "string"),
    6: ("ports", ("list", {1: ("name", "string"), 2: ("hostPort", "int"),
                           3: ("containerPort", "int"), 4: ("protocol", "string"),
                           5: ("hostIP", "string")})),
    7: ("env", ("list", {1: ("name", "string"), 2: ("value", "string")})),
    8: ("resources", {1: ("limits", ("map", _QUANTITY)), 2: ("requests", ("map", _QUANTITY))}),
    13: ("terminationMessagePath", "string"),
    14: ("imagePullPolicy", "string"),
    16: ("stdin", "bool"),
    17: ("stdinOnce", "bool"),
    18: ("tty", "bool"),
    20: ("terminationMessagePolicy", "string"),
}  # fmt: skip
_POD_TEMPLATE: Spec = {
    1: ("metadata", OBJECT_META),
    2: ("spec", {2: ("containers", ("list", _CONTAINER)), 3: ("restartPolicy", "string")}),
}
KINDS: dict[str, Spec] = {
    "ConfigMap": {
        1: ("metadata", OBJECT_META),
        2: ("data", ("map", "string")),
        3: ("binaryData", ("map", "bytes")),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", OBJECT_META),
        2: ("data", ("map", "bytes")),
        3: ("type", "string"),
        4: ("immutable", "bool"),
        5: ("stringData", ("map", "string")),
    },
    "Namespace": {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("finalizers", ("list", "string"))}),
        3: ("status", {1: ("phase", "string")}),
    },
    # What `kubectl create deployment NAME --image=... [--replicas] [--port] [-- CMD]` sends.
    "Deployment": {
        1: ("metadata", OBJECT_META),
        2: ("spec", {
            1: ("replicas", "optional int"),
            2: ("selector", _SELECTOR),
            3: ("template", _POD_TEMPLATE),
            4: ("strategy", {1: ("type", "string"),
                             2: ("rollingUpdate", {1: ("maxUnavailable", _INT_OR_STRING),
                                                   2: ("maxSurge", _INT_OR_STRING)})}),
        }),
        3: ("status", {}),
    },
    # What `kubectl create service clusterip|nodeport|headless NAME --tcp=P:T` sends.
    "Service": {
        1: ("metadata", OBJECT_META),
        2: ("spec", {
            1: ("ports", ("list", {1: ("name", "string"), 2: ("protocol", "string"),
                                   3: ("port", "int"), 4: ("targetPort", _INT_OR_STRING),
                                   5: ("nodePort", "int")})),
            2: ("selector", ("map", "string")),
            3: ("clusterIP", "string"),
            4: ("type", "string"),
            10: ("externalName", "string"),
            18: ("clusterIPs", ("list", "string")),
        }),
        3: ("status", {1: ("loadBalancer", {})}),
    },
    # What `kubectl create serviceaccount NAME` sends.
    "ServiceAccount": {
        1: ("metadata", OBJECT_META),
        2: ("secrets", ("list", {1: ("kind", "string"), 2: ("namespace", "string"),
                                 3: ("name", "string"), 4: ("uid", "string"),
                                 5: ("apiVersion", "string")})),
        3: ("imagePullSecrets", ("list", {1: ("name", "string")})),
        4: ("automountServiceAccountToken", "optional bool"),
    },
    # What `kubectl create job NAME --image=... [-- CMD]` sends.
    "Job": {
        1: ("metadata", OBJECT_META),
        2: ("spec", {
            1: ("parallelism", "optional int"),
            2: ("completions", "optional int"),
            3: ("activeDeadlineSeconds", "optional int"),
            4: ("selector", _SELECTOR),
            6: ("template", _POD_TEMPLATE),
            7: ("backoffLimit", "optional int"),
        }),
        3: ("status", {}),
    },
}  # fmt: skip


class ProtobufError(ValueError):
    pass


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object of one of KINDS."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body (no k8s\\0 prefix)")
    envelope = _fields(body[len(MAGIC) :])
    type_meta = {n: v for n, _, v in _fields(_one(envelope, 1))}
    api_version = _text(type_meta.get(1, b""))
    kind = _text(type_meta.get(2, b""))
    if kind not in KINDS:
        raise ProtobufError(
            f"podkit serve reads protobuf bodies of {', '.join(KINDS)} only, not {kind!r}: "
            "send JSON (kubectl apply -f)"
        )
    obj = _message(_one(envelope, 2), KINDS[kind], kind)
    return {"apiVersion": api_version, "kind": kind, **obj}


def _one(fields: list[tuple[int, int, Any]], number: int) -> bytes:
    for n, wire, value in fields:
        if n == number and wire == 2:
            return bytes(value)
    return b""


def _message(data: bytes, spec: Spec, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        if number not in spec:
            if value in (0, b""):  # Go writes every scalar, zero ones too: nothing is lost
                continue
            raise ProtobufError(f"{where}: field number {number} is not one podkit reads")
        name, kind = spec[number]
        path = f"{where}.{name}"
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = {n: v for n, _, v in _fields(value)}
            out.setdefault(name, {})[_text(entry.get(1, b""))] = _value(
                entry.get(2, b""), 2, kind[1], path
            )
        elif isinstance(kind, tuple):  # a list: one field occurrence per item
            out.setdefault(name, []).append(_value(value, wire, kind[1], path))
        else:
            out[name] = _value(value, wire, kind, path)
    # Zero values are what Go's JSON encoding omits (omitempty): the same object either way.
    return {
        k: (bool(v) if isinstance(v, ExplicitBool) else int(v)) if isinstance(v, Explicit) else v
        for k, v in out.items()
        if isinstance(v, Explicit) or v not in ("", None, {}, [], 0)
    }


class Explicit(int):
    """An optional field's value, kept even when it is zero."""


class ExplicitBool(Explicit):
    """An optional bool's, kept even when false."""


def _value(value: Any, wire: int, kind: Any, path: str) -> Any:
    if isinstance(kind, dict):
        if kind is _TIME:
            return _time(_message(value, kind, path))
        if kind is _QUANTITY:
            return _message(value, kind, path).get("string", "0")
        if kind is _INT_OR_STRING:
            parts = _message(value, kind, path)
            return parts.get("strVal", "") if parts.get("type") else parts.get("intVal", 0)
        return _message(value, kind, path)
    if kind == "optional int":  # a pointer in Go: present, even as 0, is set
        return Explicit(_value(value, wire, "int", path))
    if kind == "optional bool":
        return ExplicitBool(_value(value, wire, "bool", path))
    if kind in ("int", "bool"):
        if wire != 0:
            raise ProtobufError(f"{path}: expected a varint")
        return bool(value) if kind == "bool" else _signed(value)
    return _scalar(value, kind, path)


def _scalar(value: Any, kind: str, path: str) -> Any:
    if not isinstance(value, bytes | bytearray):
        raise ProtobufError(f"{path}: expected bytes")
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    return _text(bytes(value))


def _time(parts: dict[str, Any]) -> str | None:
    import datetime

    if not parts:
        return None
    when = datetime.datetime.fromtimestamp(parts.get("seconds", 0), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: bytes) -> str:
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        raise ProtobufError("a string field is not UTF-8") from None


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value  # int64 as two's complement


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """The (field number, wire type, value) of a message: varints as ints, length-delimited
    as bytes, fixed 32/64-bit as ints."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ProtobufError("truncated protobuf body")
            value, i = data[i : i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, i = int.from_bytes(data[i : i + width], "little"), i + width
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ProtobufError("truncated or overlong varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7
