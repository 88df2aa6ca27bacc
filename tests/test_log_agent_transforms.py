"""log-agent parsing, timestamps, enrichment and sink routing: pure logic, plain values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from podkit.common.podinfo import PodInfo
from podkit.images.log_agent.event import Ack, Batch, Event, full_event
from podkit.images.log_agent.parsers import (
    compile_regex,
    parse_common_log,
    parse_json_object,
    parse_regex,
)
from podkit.images.log_agent.routing import Route
from podkit.images.log_agent.timestamps import TimeParser, parse_timestamp
from podkit.images.log_agent.transform_config import Match, TransformConfig
from podkit.images.log_agent.transforms import Transformer

RECEIVED = "2026-11-25T22:15:09.500Z"
POD = PodInfo(
    pod_name="shop-7d9f",
    namespace="prod",
    pod_uid="0b6e-41f2",
    node_name="node-1",
    container_name="log-agent",
    labels={"app": "shop", "app.kubernetes.io/part-of": "store"},
)
NGINX = (
    '203.0.113.7 - alice [25/Nov/2026:23:15:08 +0100] "GET /api/cart?id=42 HTTP/1.1" 200 1534 '
    '"https://shop.example.com/" "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"'
)
WEBAPP = '10.0.0.9 - - [25/Nov/2026:22:15:08 +0000] "POST /orders HTTP/1.1" 201 0 0.0123'


def batch(*messages: str, common: Event | None = None, **extra: Any) -> Batch:
    events = [{"time": RECEIVED, "message": m, **extra} for m in messages]
    return Batch("src", events, dict(common or {}), nbytes=sum(len(m) + 1 for m in messages))


def transform(cfg: TransformConfig, b: Batch, **kwargs: Any) -> Transformer:
    t = Transformer(cfg, POD, **kwargs)
    t.apply(b)
    for event in b.events:  # the event model's promise, whatever the input was
        assert not event.keys() & b.common.keys(), event
        assert isinstance(event["time"], str) and isinstance(event["message"], str)
    return t


def config_error(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        TransformConfig(**fields)
    return str(info.value)


# ---- TransformConfig -------------------------------------------------------------------------


def test_config_defaults_parse_auto_in_utc() -> None:
    cfg = TransformConfig()
    assert (cfg.parse, cfg.time_key, cfg.time_format, cfg.timezone) == ("auto", None, None, "UTC")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"parse": "regex"}, "regex: required when parse is 'regex'"),
        ({"parse": "json", "regex": "(?P<a>.)"}, "regex: only used with parse: regex"),
        ({"parse": "regex", "regex": "(?P<level>\\w+"}, "does not compile"),
        ({"parse": "regex", "regex": "(\\w+) (.*)"}, "has no named group"),
        ({"timezone": "Europe/Pariss"}, "unknown time zone 'Europe/Pariss'"),
        ({"time_format": "yyyy-MM-dd HH:mm:ss"}, "no % directive"),
        ({"time_format": "%Y-%m-%d %Q"}, "does not work"),
        (
            {"add_fields": {"env": "prod", "_id": 1, "kubernetes": "x"}},
            "may not set _id, kubernetes",
        ),
        ({"parse": "yaml"}, "'auto', 'raw', 'json', 'regex' or 'common_log'"),
        ({"time_keys": "ts"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors_say_what_and_where(fields: dict[str, Any], expected: str) -> None:
    message = config_error(**fields)
    assert expected in message
    field = next(iter(fields)) if len(fields) == 1 else "regex"
    assert field in message  # the user can find the line to fix


def test_config_accepts_real_world_settings() -> None:
    cfg = TransformConfig(
        parse="regex",
        regex=r"^(?P<time>\S+ \S+) (?P<level>[A-Z]+) (?P<message>.*)$",
        time_format="%Y-%m-%d %H:%M:%S,%f",
        timezone="America/New_York",
        add_fields={"env": "prod", "team": None, "replicas": 3},
    )
    assert cfg.add_fields == {"env": "prod", "team": None, "replicas": 3}


# ---- Match -----------------------------------------------------------------------------------

MATCH = TypeAdapter(Match)


@pytest.mark.parametrize(
    ("match", "key", "expected"),
    [
        ({"status": {"regex": "5(0"}}, "status", "regex '5(0' does not compile"),
        ({"level": {"exists": "yes"}}, "level", "exists: must be true or false"),
        ({"level": {"rgx": "err"}}, "level", "got keys rgx"),
        ({"level": {"regex": "e", "exists": True}}, "level", "got keys exists, regex"),
        ({"level": []}, "level", "an empty list matches nothing"),
        ({"status": [500, {"regex": "5.."}]}, "status", "a list may hold only"),
        ({"kubernetes..pod_name": "x"}, "kubernetes..pod_name", "is not a field path"),
    ],
)
def test_match_errors_name_the_key(match: dict[str, Any], key: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        MATCH.validate_python(match)
    message = str(info.value)
    assert expected in message
    assert key in message


def test_match_keeps_types_for_equality() -> None:
    match = {"status": 500, "ok": True, "level": ["error", "fatal"], "trace": {"exists": False}}
    assert MATCH.validate_python(match) == match


# ---- parsers ---------------------------------------------------------------------------------


def test_nginx_combined_line() -> None:
    assert parse_common_log(NGINX) == {
        "remote_addr": "203.0.113.7",
        "user": "alice",
        "method": "GET",
        "path": "/api/cart?id=42",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes": 1534,
        "time_local": "25/Nov/2026:23:15:08 +0100",
        "referer": "https://shop.example.com/",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
    }


def test_common_log_with_request_time_and_dashes() -> None:
    fields = parse_common_log(WEBAPP)
    assert fields is not None
    assert (fields["user"], fields["status"], fields["bytes"]) == (None, 201, 0)
    assert fields["request_time"] == 0.0123
    assert "referer" not in fields  # Common, not Combined
    dashed = parse_common_log(
        '::1 - - [25/Nov/2026:22:15:08 +0000] "HEAD / HTTP/1.0" 304 - "-" "-"'
    )
    assert dashed is not None
    assert (dashed["bytes"], dashed["referer"], dashed["user_agent"]) == (0, None, None)


def test_common_log_escaped_quotes_and_odd_request_lines() -> None:
    line = (
        r'10.1.1.1 - - [25/Nov/2026:22:15:08 +0000] "GET /q?s=\"shoes\" HTTP/1.1" 200 5 '
        r'"-" "curl/8.5 \"patched\""'
    )
    fields = parse_common_log(line)
    assert fields is not None
    assert fields["path"] == r"/q?s=\"shoes\""
    assert fields["user_agent"] == r"curl/8.5 \"patched\""
    tls = r'10.1.1.1 - - [25/Nov/2026:22:15:08 +0000] "\x16\x03\x01" 400 157 "-" "-"'
    fields = parse_common_log(tls)  # a TLS hello on the plain port, as nginx logs it
    assert fields is not None
    assert (fields["method"], fields["path"], fields["status"]) == (None, r"\x16\x03\x01", 400)
    dash = parse_common_log('10.1.1.1 - - [25/Nov/2026:22:15:08 +0000] "-" 408 0')
    assert dash is not None
    assert (dash["method"], dash["path"]) == (None, None)


@pytest.mark.parametrize(
    "line",
    [
        "GET /api/cart 200",
        '203.0.113.7 - - [25/Nov/2026:23:15:08 +0100] "GET / HTTP/1.1" 2000 1',
        '{"message": "hello"}',
        "",
    ],
)
def test_common_log_rejects_other_lines(line: str) -> None:
    assert parse_common_log(line) is None


def test_parse_json_object_only_objects() -> None:
    assert parse_json_object('{"level": "info", "n": 1}') == {"level": "info", "n": 1}
    assert parse_json_object("[1, 2]") is None
    assert parse_json_object('{"level": "info"') is None
    assert parse_json_object("plain text") is None


def test_regex_parser_named_groups() -> None:
    pattern = compile_regex(r"^(?P<level>[A-Z]+)(?: \[(?P<thread>[^\]]+)\])? (?P<message>.*)$")
    assert parse_regex(pattern, "WARN [main] disk 91% full") == {
        "level": "WARN",
        "thread": "main",
        "message": "disk 91% full",
    }
    # A group that took no part is left out, not null.
    assert parse_regex(pattern, "INFO started") == {"level": "INFO", "message": "started"}
    assert parse_regex(pattern, "started") is None
    with pytest.raises(ValueError, match="no named group"):
        compile_regex(r"(\w+)")


# ---- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "time_format", "zone", "expected"),
    [
        ("2026-11-25T22:15:08Z", None, "UTC", "2026-11-25T22:15:08.000000Z"),
        ("2026-11-25T23:15:08.123456789+01:00", None, "UTC", "2026-11-25T22:15:08.123456Z"),
        ("2026-11-25 17:15:08.5", None, "America/New_York", "2026-11-25T22:15:08.500000Z"),
        ("2026-07-01T12:00:00", "rfc3339", "Europe/Paris", "2026-07-01T10:00:00.000000Z"),
        ("2026-03-08 12:00:00", None, "America/New_York", "2026-03-08T16:00:00.000000Z"),
        ("25/Nov/2026:14:15:08 -0800", None, "Asia/Tokyo", "2026-11-25T22:15:08.000000Z"),
        (
            "26/Nov/2026:09:15:08 +1100",
            "%d/%b/%Y:%H:%M:%S %z",
            "UTC",
            "2026-11-25T22:15:08.000000Z",
        ),
        (
            "Nov 26 2026 09:15:08",
            "%b %d %Y %H:%M:%S",
            "Australia/Sydney",
            "2026-11-25T22:15:08.000000Z",
        ),
        (
            "2026-11-26 07:15:08,250",
            "%Y-%m-%d %H:%M:%S,%f",
            "Asia/Tokyo",
            "2026-11-25T22:15:08.250000Z",
        ),
        (1795644908, "epoch", "UTC", "2026-11-25T22:15:08.000000Z"),
        ("1795644908.25", "epoch", "Asia/Tokyo", "2026-11-25T22:15:08.250000Z"),
        (1795644908123, "epoch_ms", "UTC", "2026-11-25T22:15:08.123000Z"),
        (1795644908123, None, "UTC", "2026-11-25T22:15:08.123000Z"),  # pino's "time"
        (1795644908.5, None, "UTC", "2026-11-25T22:15:08.500000Z"),
    ],
)
def test_timestamps_in_many_zones(
    value: object, time_format: str | None, zone: str, expected: str
) -> None:
    assert parse_timestamp(value, time_format, zone) == expected


@pytest.mark.parametrize(
    ("value", "time_format"),
    [
        ("yesterday", None),
        ("2026-13-01T00:00:00Z", None),
        ("2026-11-25", None),  # a date is not a point in time
        ("2026-W48-3T10:00", None),
        (True, None),
        ({"sec": 1}, None),
        ("2026-11-25T22:15:08Z", "epoch"),
        (1795644908, "rfc3339"),
        ("25/Foo/2026:14:15:08 -0800", None),
        (float("nan"), "epoch"),
        (1e300, "epoch"),
    ],
)
def test_unparseable_timestamps_give_none(value: object, time_format: str | None) -> None:
    assert parse_timestamp(value, time_format) is None


def test_time_parser_gives_the_same_answer_from_its_cache() -> None:
    parse = TimeParser(None, "Europe/Berlin")
    first = [parse("25/Nov/2026:23:15:08 +0100") for _ in range(3)]
    assert first == ["2026-11-25T22:15:08.000000Z"] * 3
    assert [parse("not a time") for _ in range(2)] == [None, None]


# ---- Transformer -----------------------------------------------------------------------------


def test_raw_leaves_events_alone_and_enriches_once_per_batch() -> None:
    b = batch("plain line", '{"json": "not parsed"}', common={"source": "tcp"}, _id="f:1")
    before = [dict(e) for e in b.events]
    t = transform(TransformConfig(parse="raw", add_fields={"env": "prod"}), b)
    assert b.events == before
    assert b.common == {
        "source": "tcp",
        "kubernetes": {
            "pod_name": "shop-7d9f",
            "namespace_name": "prod",
            "pod_id": "0b6e-41f2",
            "labels": {"app": "shop", "app.kubernetes.io/part-of": "store"},
            "container_name": "log-agent",
            "host": "node-1",
        },
        "env": "prod",
    }
    assert (t.parse_failures, t.time_failures) == (0, 0)


def test_nginx_access_lines_get_fields_and_their_own_time() -> None:
    b = batch(NGINX, "upstream timed out (110)")
    t = transform(TransformConfig(parse="common_log"), b)
    access, other = b.events
    assert access["status"] == 200 and access["path"] == "/api/cart?id=42"
    assert access["time"] == "2026-11-25T22:15:08.000000Z"  # 23:15:08 +0100
    assert access["time_local"] == "25/Nov/2026:23:15:08 +0100"
    assert access["message"] == NGINX
    assert other == {"time": RECEIVED, "message": "upstream timed out (110)"}
    assert (t.parse_failures, t.time_failures) == (1, 0)


def test_json_app_log_becomes_the_event() -> None:
    line = (
        '{"timestamp": "2026-11-25T17:15:08.250-05:00", "level": "error", '
        '"message": "payment declined", "order_id": 981, "container": "checkout"}'
    )
    b = batch(line)
    transform(TransformConfig(parse="json"), b)
    (event,) = b.events
    assert event == {
        "time": "2026-11-25T22:15:08.250000Z",
        "message": "payment declined",
        "timestamp": "2026-11-25T17:15:08.250-05:00",
        "level": "error",
        "order_id": 981,
    }
    assert b.common["kubernetes"]["container_name"] == "checkout"


def test_docker_style_log_key_and_sender_time() -> None:
    b = batch('{"log": "GET /healthz 200\\n", "stream": "stdout", "time": "2026-11-25T22:15:08Z"}')
    transform(TransformConfig(), b)
    (event,) = b.events
    assert event == {
        "time": "2026-11-25T22:15:08.000000Z",
        "message": "GET /healthz 200\n",
        "stream": "stdout",
    }


def test_webapp_json_wrapped_access_line_is_parsed_twice() -> None:
    line = (
        '{"message": "' + WEBAPP.replace('"', '\\"') + '", "container": "simple-webapp", '
        '"stream": "access", "time": "2026-11-25T22:15:08.031Z"}'
    )
    b = batch(line, common={"source": "tcp"})
    transform(TransformConfig(), b)
    (event,) = b.events
    assert event["message"] == WEBAPP
    assert (event["stream"], event["method"], event["status"]) == ("access", "POST", 201)
    assert event["time"] == "2026-11-25T22:15:08.031000Z"  # the JSON time: more precise
    assert b.common["kubernetes"]["container_name"] == "simple-webapp"


def test_auto_falls_back_to_raw_without_counting_failures() -> None:
    b = batch("Starting server on :8080", '{"broken json', NGINX)
    t = transform(TransformConfig(), b)
    assert b.events[0] == {"time": RECEIVED, "message": "Starting server on :8080"}
    assert b.events[1] == {"time": RECEIVED, "message": '{"broken json'}
    assert b.events[2]["status"] == 200
    assert t.parse_failures == 0


def test_json_mode_counts_lines_that_are_not_objects() -> None:
    b = batch('{"level": "info"}', "plain", "[1, 2]")
    t = transform(TransformConfig(parse="json"), b)
    assert [e["message"] for e in b.events] == ['{"level": "info"}', "plain", "[1, 2]"]
    assert t.parse_failures == 2


def test_unparseable_time_keeps_received_time_and_is_counted() -> None:
    b = batch('{"time": "last tuesday", "message": "a"}', '{"ts": "2026-11-25T22:15:08Z"}')
    t = transform(TransformConfig(parse="json"), b)
    assert b.events[0] == {"time": RECEIVED, "message": "a"}  # "time" is the agent's field
    assert b.events[1]["time"] == RECEIVED  # "ts" is not a default time key
    assert t.time_failures == 1
    b = batch('{"ts": 1795644908}')
    transform(TransformConfig(parse="json", time_key="ts", time_format="epoch"), b)
    assert b.events[0] == {
        "time": "2026-11-25T22:15:08.000000Z",
        "message": '{"ts": 1795644908}',
        "ts": 1795644908,
    }


def test_static_and_source_fields_win_over_parsed_ones() -> None:
    line = '{"message": "m", "env": "dev", "source": "app", "kubernetes": "x", "_id": "fake"}'
    b = batch(line, common={"source": "file", "file": "/var/log/app.log"}, _id="ino:42:0")
    transform(TransformConfig(add_fields={"env": "prod"}), b)
    (event,) = b.events
    assert event == {"time": RECEIVED, "message": "m", "_id": "ino:42:0"}
    seen = full_event(event, b.common)
    assert (seen["env"], seen["source"], seen["kubernetes"]["pod_name"]) == (
        "prod",
        "file",
        "shop-7d9f",
    )


def test_static_fields_win_over_access_log_fields() -> None:
    b = batch(NGINX)
    transform(TransformConfig(parse="common_log", add_fields={"user": "svc-shop"}), b)
    assert "user" not in b.events[0]
    assert full_event(b.events[0], b.common)["user"] == "svc-shop"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['{"container": "web", "message": "a"}', '{"container": "worker", "message": "b"}'],
            ["web", "worker"],
        ),
        (['{"container": "web", "message": "a"}', "no sender"], ["web", "sidecar-tcp"]),
    ],
)
def test_mixed_senders_get_their_own_container_name(lines: list[str], expected: list[str]) -> None:
    b = batch(*lines)
    transform(TransformConfig(), b, container_name="sidecar-tcp")
    assert [e["kubernetes"]["container_name"] for e in b.events] == expected
    assert all(e["kubernetes"]["pod_name"] == "shop-7d9f" for e in b.events)
    assert "kubernetes" not in b.common


@pytest.mark.parametrize(
    ("source_k8s", "transformer_container", "expected"),
    [
        ({}, None, "log-agent"),  # the agent's own container
        ({}, "nginx", "nginx"),  # a file source's container_name
        ({"container_name": "php-fpm"}, "nginx", "php-fpm"),  # the source knows better
        ({"container_name": None}, "nginx", "nginx"),
    ],
)
def test_container_name_precedence(
    source_k8s: dict[str, Any], transformer_container: str | None, expected: str
) -> None:
    b = batch("line", common={"kubernetes": source_k8s})
    transform(TransformConfig(parse="raw"), b, container_name=transformer_container)
    assert b.common["kubernetes"]["container_name"] == expected


def test_source_kubernetes_keys_win_and_missing_ones_are_filled() -> None:
    source = {"namespace_name": "prod", "pod_name": "shop-7d9f", "container_name": "web"}
    b = batch("line", common={"kubernetes": source})
    transform(TransformConfig(parse="raw"), b)
    assert b.common["kubernetes"] == {
        "pod_name": "shop-7d9f",
        "namespace_name": "prod",
        "pod_id": "0b6e-41f2",
        "labels": {"app": "shop", "app.kubernetes.io/part-of": "store"},
        "container_name": "web",
        "host": "node-1",
    }
    assert source == {"namespace_name": "prod", "pod_name": "shop-7d9f", "container_name": "web"}


def test_another_pods_logs_never_get_this_pods_identity() -> None:
    # A node-level agent reading /var/log/pods/kube-system_coredns-5d7_9f1c/coredns/0.log
    source = {"namespace_name": "kube-system", "pod_name": "coredns-5d7", "pod_id": "9f1c"}
    b = batch(
        "[INFO] plugin/reload", common={"kubernetes": {**source, "container_name": "coredns"}}
    )
    transform(TransformConfig(), b)
    assert b.common["kubernetes"] == {**source, "container_name": "coredns", "host": "node-1"}


def test_regex_with_message_and_time_groups() -> None:
    cfg = TransformConfig(
        parse="regex",
        regex=r"^(?P<time>\S+ \S+) (?P<level>[A-Z]+) +\[(?P<logger>[^\]]+)\] (?P<message>.*)$",
        time_format="%Y-%m-%d %H:%M:%S,%f",
        timezone="Europe/Berlin",
    )
    b = batch(
        "2026-11-25 23:15:08,417 ERROR [pool-1] connection refused: db:5432",
        "\tat org.postgresql.Driver.connect(Driver.java:285)",
    )
    t = transform(cfg, b)
    assert b.events[0] == {
        "time": "2026-11-25T22:15:08.417000Z",
        "message": "connection refused: db:5432",
        "level": "ERROR",
        "logger": "pool-1",
    }
    assert b.events[1]["message"].startswith("\tat org.postgresql")
    assert (t.parse_failures, t.time_failures) == (1, 0)


def test_raw_with_time_key_reads_the_sources_field() -> None:
    b = batch("x", ts="2026-11-25T23:15:08+01:00")
    t = transform(TransformConfig(parse="raw", time_key="ts"), b)
    assert b.events[0]["time"] == "2026-11-25T22:15:08.000000Z"
    assert t.time_failures == 0


# ---- routing ---------------------------------------------------------------------------------


def routed_batch() -> Batch:
    b = batch(
        NGINX,
        NGINX.replace('" 200 ', '" 503 '),
        NGINX.replace('" 200 ', '" 404 '),
        '{"level": "error", "message": "db down", "ok": 1}',
        common={"source": "file"},
    )
    b.ack = Ack(None)
    b.replayable = True
    transform(TransformConfig(add_fields={"env": "prod"}), b)
    return b


def route(match: dict[str, Any]) -> Route:
    return Route(MATCH.validate_python(match))


def test_empty_match_selects_the_batch_itself() -> None:
    b = routed_batch()
    assert route({}).select(b) is b


def test_common_fields_decide_for_the_whole_batch() -> None:
    b = routed_batch()
    assert route({"kubernetes.container_name": "log-agent", "env": "prod"}).select(b) is b
    assert route({"kubernetes.container_name": ["nginx", "web"]}).select(b) is None
    assert route({"kubernetes.labels.app.kubernetes.io/part-of": "store"}).select(b) is b
    assert route({"env": {"exists": False}}).select(b) is None


def test_split_by_event_fields_keeps_batch_identity() -> None:
    b = routed_batch()
    errors = route({"status": {"regex": "^5"}}).select(b)
    assert errors is not None and errors is not b
    assert [e["status"] for e in errors.events] == [503]
    assert errors.common is b.common and errors.ack is b.ack
    assert (errors.source_id, errors.replayable) == (b.source_id, b.replayable)
    assert errors.nbytes == b.nbytes // 4
    client = route({"status": [404, 410], "method": "GET"}).select(b)
    assert client is not None and [e["status"] for e in client.events] == [404]


def test_match_semantics_users_rely_on() -> None:
    b = routed_batch()
    json_only = route({"status": {"exists": False}}).select(b)
    assert json_only is not None and [e["message"] for e in json_only.events] == ["db down"]
    assert route({"ok": True}).select(b) is None  # 1 is not true
    level = route({"level": {"regex": "(?i)ERR"}}).select(b)
    assert level is not None and len(level.events) == 1
    assert route({"status": "200"}).select(b) is None  # types matter: 200 is a number
    assert route({"status": {"regex": "^999$"}}).select(b) is None


def test_routing_by_per_event_container() -> None:
    b = batch('{"container": "web", "message": "a"}', '{"container": "worker", "message": "b"}')
    transform(TransformConfig(), b)
    web = route({"kubernetes.container_name": "web"}).select(b)
    assert web is not None and [e["message"] for e in web.events] == ["a"]
