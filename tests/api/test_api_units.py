"""The API's pure parts: patches (RFC 7386, RFC 6902, strategic merge for the served kinds),
selectors, and kubectl's AGE column."""

from __future__ import annotations

import pytest

from podkit.api import smp
from podkit.api.kinds import human_duration
from podkit.api.patch import PatchError, json_patch, merge_patch
from podkit.api.selectors import SelectorError, matches, parse_fields, parse_labels

OBJ = {"metadata": {"name": "a", "labels": {"app": "web"}}, "data": {"x": "1", "y": "2"}}


def test_merge_patch_merges_maps_and_null_removes() -> None:
    got = merge_patch(OBJ, {"data": {"x": None, "z": "3"}, "metadata": {"labels": {"t": "1"}}})
    assert got["data"] == {"y": "2", "z": "3"}
    assert got["metadata"] == {"name": "a", "labels": {"app": "web", "t": "1"}}
    assert OBJ["data"] == {"x": "1", "y": "2"}  # the target is not changed
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}  # lists are replaced


def test_strategic_merge_patch_directives_on_maps() -> None:
    def patch(p: object) -> dict[str, object]:
        return smp.apply(OBJ, p, None, {})  # type: ignore[no-any-return]

    assert patch({"data": {"$patch": "replace", "n": "9"}})["data"] == {"n": "9"}
    assert "data" not in patch({"data": {"$patch": "delete"}})
    assert patch({"data": {"x": None}})["data"] == {"y": "2"}
    with pytest.raises(PatchError, match="unknown patch directive"):
        patch({"data": {"$patch": "explode"}})


def test_strategic_merge_patch_merges_lists_by_the_schemas_keys() -> None:
    from podkit.manifest.schema import kind_definition

    root, defs = kind_definition("Pod")
    pod = {
        "metadata": {"name": "p", "finalizers": ["a"]},
        "spec": {
            "containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"},
                                                         {"name": "B", "value": "2"}],
                 "args": ["x", "y"]},
                {"name": "side", "image": "side:1"},
            ]
        },
    }  # fmt: skip
    patched = smp.apply(
        pod,
        {
            "metadata": {"finalizers": ["b"]},
            "spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                "containers": [
                    {"name": "app", "image": "app:2", "env": [{"name": "A", "$patch": "delete"}],
                     "args": ["z"]},
                ],
            },
        },
        root,
        defs,
    )  # fmt: skip
    side, app = patched["spec"]["containers"]
    assert side == {"name": "side", "image": "side:1"}  # untouched, and first as ordered
    assert app["image"] == "app:2" and app["env"] == [{"name": "B", "value": "2"}]
    assert app["args"] == ["z"]  # an atomic list is replaced
    assert patched["metadata"]["finalizers"] == ["a", "b"]  # a set: union
    gone = smp.apply(patched, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
                     root, defs)  # fmt: skip
    assert gone["metadata"]["finalizers"] == ["b"]
    assert pod["spec"]["containers"][0]["image"] == "app:1"  # the target is not changed


def test_json_patch_operations_apply_in_order_on_a_copy() -> None:
    ops = [
        {"op": "add", "path": "/data/z", "value": "3"},
        {"op": "remove", "path": "/data/x"},
        {"op": "replace", "path": "/metadata/labels/app", "value": "db"},
        {"op": "copy", "from": "/data/y", "path": "/data/w"},
        {"op": "move", "from": "/data/z", "path": "/data/v"},
        {"op": "test", "path": "/data/v", "value": "3"},
        {"op": "add", "path": "/list", "value": [1]},
        {"op": "add", "path": "/list/-", "value": 2},
        {"op": "add", "path": "/list/0", "value": 0},
        {"op": "add", "path": "/metadata/labels/a~1b", "value": "slash"},
    ]
    got = json_patch(OBJ, ops)
    assert got["data"] == {"y": "2", "w": "2", "v": "3"}
    assert got["list"] == [0, 1, 2]
    assert got["metadata"]["labels"] == {"app": "db", "a/b": "slash"}
    assert OBJ["data"] == {"x": "1", "y": "2"}
    for bad in (
        [{"op": "test", "path": "/data/x", "value": "2"}],
        [{"op": "remove", "path": "/nope"}],
        [{"op": "add", "path": "/list/5", "value": 1}],
        [{"op": "frobnicate", "path": "/data"}],
        {"op": "add"},
    ):
        with pytest.raises(PatchError):
            json_patch({**OBJ, "list": []}, bad)


def test_label_selectors_as_the_apiserver_reads_them() -> None:
    web = {"metadata": {"name": "a", "namespace": "n", "labels": {"app": "web", "tier": "fe"}}}
    db = {"metadata": {"name": "b", "namespace": "n", "labels": {"app": "db"}}}

    def pick(labels: str = "", fields: str = "") -> list[str]:
        lr, fr = parse_labels(labels), parse_fields(fields)
        return [o["metadata"]["name"] for o in (web, db) if matches(o, lr, fr)]

    assert pick("app=web") == pick("app==web") == ["a"]
    assert pick("app!=web") == ["b"]
    assert pick("app in (web, db)") == ["a", "b"]
    assert pick("app notin (web),tier") == []
    assert pick("tier") == ["a"] and pick("!tier") == ["b"]
    assert pick(fields="metadata.name=b") == ["b"]
    assert pick(fields="metadata.namespace!=n") == []
    with pytest.raises(SelectorError, match="field label not supported"):
        parse_fields("spec.schedulerName=x")
    with pytest.raises(SelectorError):
        parse_labels("app in web")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 600, "3h10m"),
        (30 * 3600, "30h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_age_reads_as_kubectl_shows_it(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_a_protobuf_body_as_kubectl_sends_it_reads_as_json() -> None:
    from podkit.api.protobuf import ProtobufError, decode

    # `kubectl create configmap cfg2 --from-literal=a=b`, captured from kubectl 1.37.1.
    body = (
        b"k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1e\n\x14\n\x04cfg2\x12\x00\x1a\x00"
        b'"\x00*\x002\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00"\x00'
    )
    assert decode(body) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg2"},
        "data": {"a": "b"},
    }
    for bad, why in (
        (b"{}", "no k8s"),
        (body[:20], "truncated"),
        (body.replace(b"\tConfigMap", b"\tConfigMop"), "not 'ConfigMop'"),
    ):
        with pytest.raises(ProtobufError, match=why):
            decode(bad)


def test_spdy_frames_as_kubectl_port_forward_sends_them() -> None:
    import struct
    import zlib

    from podkit.api import spdy
    from podkit.api.spdy_dictionary import DICTIONARY

    assert (len(DICTIONARY), zlib.adler32(DICTIONARY)) == (1423, 0xE3C6A7C2)  # SPDY/3's own
    client = zlib.compressobj(zdict=DICTIONARY)

    def syn(stream: int, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        block = client.compress(raw) + client.flush(zlib.Z_SYNC_FLUSH)
        body = struct.pack(">IIH", stream, 0, 0) + block
        return struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, len(body)) + body

    session = spdy.Session()
    error = syn(1, {"streamtype": "error", "port": "80", "requestid": "0"})
    data = syn(3, {"streamtype": "data", "port": "80", "requestid": "0"})
    payload = struct.pack(">II", 3, (spdy.FLAG_FIN << 24) | 5) + b"hello"
    stream = error + data + payload
    events = (
        session.receive(stream[:7]) + session.receive(stream[7:30]) + session.receive(stream[30:])
    )  # frames cut anywhere, as WebSocket messages may cut them
    assert events == [
        spdy.Opened(1, {"streamtype": "error", "port": "80", "requestid": "0"}),
        spdy.Opened(3, {"streamtype": "data", "port": "80", "requestid": "0"}),
        spdy.Data(3, b"hello", True),
    ]
    reply = session.reply(3)
    assert reply[:4] == bytes([0x80, 0x03, 0x00, spdy.SYN_REPLY])
    assert struct.unpack(">I", reply[8:12])[0] == 3
    assert session.data(3, b"x", fin=True) == struct.pack(">II", 3, (1 << 24) | 1) + b"x"
    ping = struct.pack(">HHI", 0x8003, spdy.PING, 4) + b"\x00\x00\x00\x01"
    assert session.receive(ping) == [spdy.Ping(b"\x00\x00\x00\x01")]
