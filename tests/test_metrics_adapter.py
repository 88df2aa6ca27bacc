"""metrics-adapter without sockets: selectors, decoding, mapping, rendering (checked with
prometheus-client's own parsers), the cache policy, and config errors."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from podkit.common.config import ConfigError, load
from podkit.images.metrics_adapter import selector
from podkit.images.metrics_adapter.cache import Outcome, ScrapeCache, page_families
from podkit.images.metrics_adapter.config import ENV_PREFIX, AdapterConfig
from podkit.images.metrics_adapter.decode import DecodeError, decode
from podkit.images.metrics_adapter.mapping import Family, auto_families, map_document
from podkit.images.metrics_adapter.render import render

# json_exporter's README data, plus what an app's status usually has.
DOC: dict[str, Any] = {
    "counter": 1234,
    "location": "mars",
    "values": [
        {"id": "id-A", "count": 1, "some_boolean": True, "state": "ACTIVE"},
        {"id": "id-B", "count": 2, "some_boolean": False, "state": "INACTIVE"},
        {"id": "id-C", "count": 3, "some_boolean": True, "state": "ACTIVE"},
    ],
    "a": {"b": {"c": 7}},
    "key with space": 5,
    "numbers": [10, 20, 30, 40],
}

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


# --- selectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$.counter", [1234]),
        ("$.a.b.c", [7]),
        ("$.values[0].id", ["id-A"]),
        ("$.values[-1].id", ["id-C"]),
        ("$.values[*].count", [1, 2, 3]),
        ("$.values.*.id", ["id-A", "id-B", "id-C"]),
        ("$['key with space']", [5]),
        ('$["a"]["b"].c', [7]),
        ("$.numbers[1:3]", [20, 30]),
        ("$.numbers[0,3]", [10, 40]),
        ("$..c", [7]),
        ("{.counter}", [1234]),  # json_exporter's (Kubernetes jsonpath) form
        ("{ .values[*].id }", ["id-A", "id-B", "id-C"]),
        ("{$.a.b}", [{"c": 7}]),
        ('{ .values[?(@.state == "ACTIVE")].id }', ["id-A", "id-C"]),
        ("$.values[?(@.count >= 2 && @.some_boolean == true)].id", ["id-C"]),
        ("$.values[?(@.count < 2 || @.state != 'ACTIVE')].id", ["id-A", "id-B"]),
        ("$.values[?(@.some_boolean)].id", ["id-A", "id-B", "id-C"]),  # present, even false
        ("$.values[?(@.count == true)].id", []),  # JSON true is not 1
        ("$.missing", []),
        ("$.values[7]", []),
        ("$", [DOC]),
    ],
)
def test_selectors_json_exporter_users_write(text: str, expected: list[Any]) -> None:
    assert selector.compile(text).find(DOC) == expected


def test_a_selector_knows_whether_it_can_match_many() -> None:
    assert not selector.compile("$.a.b").many and not selector.compile("{.values[0]}").many
    for plural in ("$.values[*]", "$..c", "$.numbers[1:2]", "$.numbers[0,1]", "$.a[?(@.x)]"):
        assert selector.compile(plural).many, plural


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("counter", "at character 1: a selector starts with $"),
        ("$.values[", "at the end: expected an index"),
        ("$.a.", "at the end: expected a name or * after '.'"),
        ("{.a.b", "at the end: expected '}'"),
        ("$[]", "at character 3: empty brackets"),
        ("$.a]", "at character 4: unexpected ']'"),
        ("$['x]", "at character 3: unclosed ' quote"),
        ("$.v[?(@.x = 1)]", "at character 11: use == to compare"),
        ("$.v[?(@.x == )]", "expected @.path, a quoted string, a number"),
        ("$.v[?($.x == 1)]", "inside a filter, @ is the item"),
        ("$.n[::0]", "a slice step cannot be 0"),
        ("", "empty selector"),
    ],
)
def test_invalid_selectors_say_where_and_why(text: str, reason: str) -> None:
    with pytest.raises(selector.SelectorError) as err:
        selector.compile(text)
    assert str(err.value).startswith(f"invalid selector {text!r}: ")
    assert reason in str(err.value)


# --- decoding ------------------------------------------------------------------------------------


def test_json_and_key_value_text_are_read_by_content_type_or_by_look() -> None:
    assert decode(b'{"a": 1}', "application/json") == {"a": 1}
    assert decode(b" [1, 2]", "text/plain") == [1, 2]  # auto: it looks like JSON
    text = b"# stats\nrequests=42\nuptime: 5.5\n\nstarted=12:30\nhttp.errors = 3\n"
    assert decode(text, "text/plain; charset=utf-8") == {
        "requests": "42",
        "uptime": "5.5",
        "started": "12:30",
        "http.errors": "3",
    }
    assert decode(b'{"a": 1}', "", "text") == {'{"a"': "1}"}  # forced: taken as text
    with pytest.raises(DecodeError, match="not JSON"):
        decode(b"{oops", "application/json")
    with pytest.raises(DecodeError, match=r"line 1: expected key=value, got '<html>'"):
        decode(b"<html>\n<h1>oops</h1>", "text/html")
    with pytest.raises(DecodeError, match="not UTF-8"):
        decode(b"a=\xff\xfe", "text/plain")


# --- mapping and rendering -----------------------------------------------------------------------


def config_from(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> AdapterConfig:
    path = tmp_path / "adapter.yaml"
    path.write_text(textwrap.dedent(text))
    return load(AdapterConfig, path, env_prefix=ENV_PREFIX, environ=environ or {})


def samples(text: str, parser: Any = parse_prometheus) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser(text)
        for s in family.samples
    }


def test_json_exporter_example_config_gives_json_exporter_output(tmp_path: Path) -> None:
    """json_exporter's examples/config.yml `default` module (its metrics list, as is) over its
    data: the same series json_exporter's README shows."""
    config = config_from(
        tmp_path,
        """
        metrics:
        - name: example_global_value
          path: '{ .counter }'
          help: Example of a top-level global value scrape in the json
          labels:
            environment: beta # static label
            location: 'planet-{ .location }' # dynamic label
        - name: example_value
          type: object
          help: Example of sub-level value scrapes from a json
          path: '{ .values[?(@.state == "ACTIVE")] }'
          labels:
            environment: beta # static label
            id: '{ .id }'       # dynamic label
          values:
            active: 1         # static value
            count: '{ .count }' # dynamic value
            boolean: '{ .some_boolean }'
        """,
    )
    families, problems = map_document(config.rules(), DOC)
    assert problems == []
    body, content_type = render(families)
    assert content_type.startswith("text/plain; version=0.0.4")
    got = samples(body.decode())
    beta = ("environment", "beta")
    assert got == {
        ("example_global_value", (beta, ("location", "planet-mars"))): 1234.0,
        ("example_value_active", (beta, ("id", "id-A"))): 1.0,
        ("example_value_active", (beta, ("id", "id-C"))): 1.0,
        ("example_value_count", (beta, ("id", "id-A"))): 1.0,
        ("example_value_count", (beta, ("id", "id-C"))): 3.0,
        ("example_value_boolean", (beta, ("id", "id-A"))): 1.0,
        ("example_value_boolean", (beta, ("id", "id-C"))): 1.0,
    }
    # json_exporter's default type is untyped ("unknown" to the parser).
    assert {f.name: f.type for f in parse_prometheus(body.decode())}["example_value_count"] == (
        "unknown"
    )


WEBAPP_STATUS = {
    "app": "simple-webapp",
    "version": "0.1.0",
    "uptime_seconds": 12.5,
    "requests": 42,
    "errors": 2,
    "in_flight": 1,
    "routes": [
        {"route": "/", "requests": 30, "errors": 0},
        {"route": "/api/info", "requests": 12, "errors": 2},
    ],
}

WEBAPP_MAPPING = """
metrics:
  - name: webapp_requests_total
    path: $.requests
    type: counter
    help: Responses the app wrote.
  - name: webapp_in_flight
    path: $.in_flight
  - name: webapp_uptime
    path: $.uptime_seconds
    unit: seconds
  - name: webapp_route_requests
    type: counter
    path: $.routes[*]
    value: $.requests
    labels: {route: $.route, pod: web-1}
  - name: webapp_build
    type: info
    path: $
    labels: {version: '{.version}'}
"""


def test_arrays_of_objects_become_labelled_series_in_both_formats(tmp_path: Path) -> None:
    config = config_from(tmp_path, WEBAPP_MAPPING)
    families, problems = map_document(config.rules(), WEBAPP_STATUS)
    assert problems == []

    text, text_type = render(families, "text/plain")
    om, om_type = render(families, "application/openmetrics-text; version=1.0.0")
    assert text_type == "text/plain; version=0.0.4; charset=utf-8"
    assert om_type.startswith("application/openmetrics-text; version=1.0.0")
    assert om.endswith(b"# EOF\n") and not text.endswith(b"# EOF\n")

    for body, parser in ((text, parse_prometheus), (om, parse_openmetrics)):
        got = samples(body.decode(), parser)
        assert got[("webapp_requests_total", ())] == 42
        assert got[("webapp_in_flight", ())] == 1
        assert got[("webapp_uptime_seconds", ())] == 12.5
        pod = ("pod", "web-1")
        assert got[("webapp_route_requests_total", (pod, ("route", "/")))] == 30
        assert got[("webapp_route_requests_total", (pod, ("route", "/api/info")))] == 12
        assert got[("webapp_build_info", (("version", "0.1.0"),))] == 1

    types = {f.name: (f.type, f.unit, f.documentation) for f in parse_openmetrics(om.decode())}
    assert types["webapp_requests"] == ("counter", "", "Responses the app wrote.")
    uptime_help = "$.uptime_seconds in the app's status."  # the default help names the path
    assert types["webapp_uptime_seconds"] == ("gauge", "seconds", uptime_help)
    assert types["webapp_build"][0] == "info"


def test_a_bad_series_is_skipped_and_reported_the_rest_stands(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        """
        metrics:
          - {name: present, path: $.requests}
          - {name: missing, path: $.nope}
          - {name: words, path: $.app}
          - {name: negative_total, path: $.delta, type: counter}
          - name: route_errors
            path: $.routes[*]
            value: $.errors
            labels: {route: $.route}
          - name: same_labels     # two items, no label to tell them apart
            path: $.routes[*]
            value: $.requests
          - {name: wildcard_over_nothing, path: '$.empty[*]'}
        """,
    )
    doc = {
        **WEBAPP_STATUS,
        "delta": -3,
        "empty": [],
        "routes": [*WEBAPP_STATUS["routes"], {"route": "/x"}],
    }
    families, problems = map_document(config.rules(), doc)
    by_name = {f.name: f.samples for f in families}
    assert by_name["present"] == [({}, 42.0)]
    assert by_name["missing"] == [] and by_name["words"] == [] and by_name["negative"] == []
    assert by_name["route_errors"] == [({"route": "/"}, 0.0), ({"route": "/api/info"}, 2.0)]
    assert by_name["same_labels"] == [({}, 30.0)]
    assert by_name["wildcard_over_nothing"] == []  # an empty list is no problem
    assert [(p.metric, p.reason) for p in problems] == [
        ("missing", "no value at $.nope"),
        ("words", "value at $.app is not a number: 'simple-webapp'"),
        ("negative_total", "counter value at $.delta must be 0 or more: -3"),
        ("route_errors", "no value at $.errors"),
        ("same_labels", "repeated series same_labels{}"),
        ("same_labels", "no value at $.requests"),
    ]
    # The page with them still parses.
    assert samples(render(families)[0].decode())[("present", ())] == 42


def test_values_from_text_booleans_and_value_map(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        """
        metrics:
          - {name: requests, path: $.requests, type: counter}
          - {name: ratio, path: "$['cache.hit_ratio']"}
          - {name: healthy, path: $.healthy}
          - name: state
            path: $.state
            value_map: {ok: 1, degraded: 0.5, down: 0}
          - {name: nan, path: $.nan}
        """,
    )
    data = decode(
        b"requests=42\ncache.hit_ratio=0.75\nhealthy=true\nstate=degraded\nnan=NaN\n", "text/plain"
    )
    families, problems = map_document(config.rules(), data)
    assert problems == []
    values = {f.name: f.samples[0][1] for f in families}
    assert values["requests"] == 42 and values["ratio"] == 0.75 and values["healthy"] == 1
    assert values["state"] == 0.5 and math.isnan(values["nan"])


def test_info_without_labels_takes_the_objects_plain_fields(tmp_path: Path) -> None:
    config = config_from(tmp_path, "metrics: [{name: build_info, type: info, path: $.build}]")
    doc = {"build": {"version": "1.2", "commit": "abc", "dirty": False, "deps": ["x"]}}
    families, _ = map_document(config.rules(), doc)
    assert families[0].name == "build"
    assert families[0].samples == [({"version": "1.2", "commit": "abc", "dirty": "false"}, 1.0)]


def test_without_rules_every_number_is_a_gauge_named_by_its_path() -> None:
    doc = {
        "requests": 5,
        "http": {"errors": 1, "ok": True, "name": "x"},
        "cache.hits": "12",
        "routes": [{"requests": 1}],
        "metrics_adapter_up": 3,
    }
    got = {f.name: (f.type, f.samples) for f in auto_families(doc)}
    assert got == {
        "requests": ("gauge", [({}, 5.0)]),
        "http_errors": ("gauge", [({}, 1.0)]),
        "http_ok": ("gauge", [({}, 1.0)]),
        "cache_hits": ("gauge", [({}, 12.0)]),
    }


# --- the cache policy and the adapter's own metrics ----------------------------------------------


def ok(finished: float, value: float) -> Outcome:
    family = Family("app_value", "gauge", "v")
    family.samples.append(({}, value))
    return Outcome("ok", 0.01, finished, 1_700_000_000.0 + finished, families=(family,))


def failed(finished: float, result: str = "timeout") -> Outcome:
    return Outcome(result, 0.5, finished, 1_700_000_000.0 + finished, error="no answer")


def page(cache: ScrapeCache, now: float) -> dict[tuple[str, tuple[Any, ...]], float]:
    body, _ = render(page_families(cache.view(now)), "application/openmetrics-text")
    return samples(body.decode(), parse_openmetrics)


def test_results_are_reused_for_cache_ttl_and_stale_values_only_for_serve_stale_for() -> None:
    cache = ScrapeCache(ttl=1.0, serve_stale_for=10.0)
    assert not cache.fresh(0.0)
    first = page(cache, 0.0)  # nothing scraped yet: up 0, no app values, counters at 0
    assert first[("metrics_adapter_up", ())] == 0 and ("app_value", ()) not in first
    assert first[("metrics_adapter_scrapes_total", (("result", "timeout"),))] == 0

    cache.record(ok(100.0, 7))
    assert cache.fresh(100.5) and not cache.fresh(101.0)
    got = page(cache, 100.5)
    assert got[("app_value", ())] == 7 and got[("metrics_adapter_up", ())] == 1
    assert got[("metrics_adapter_data_age_seconds", ())] == 0.5
    assert got[("metrics_adapter_last_success_timestamp_seconds", ())] == 1_700_000_100.0

    cache.record(failed(102.0))  # the app stopped answering: the last values, marked
    got = page(cache, 103.0)
    assert got[("metrics_adapter_up", ())] == 0 and got[("app_value", ())] == 7
    assert got[("metrics_adapter_data_age_seconds", ())] == 3.0
    assert got[("metrics_adapter_scrape_duration_seconds", ())] == 0.5
    assert got[("metrics_adapter_scrapes_total", (("result", "ok"),))] == 1
    assert got[("metrics_adapter_scrapes_total", (("result", "timeout"),))] == 1

    got = page(cache, 110.5)  # 10.5 s after the good scrape: too old to show
    assert got[("metrics_adapter_up", ())] == 0 and ("app_value", ()) not in got
    assert ("metrics_adapter_data_age_seconds", ()) not in got

    cache.record(ok(111.0, 9))  # back
    got = page(cache, 111.0)
    assert got[("metrics_adapter_up", ())] == 1 and got[("app_value", ())] == 9


def test_without_serve_stale_for_a_failure_shows_no_app_values() -> None:
    cache = ScrapeCache(ttl=0.0, serve_stale_for=0.0)
    cache.record(ok(1.0, 7))
    assert not cache.fresh(1.0)  # ttl 0: every page asks the app
    cache.record(failed(2.0, "connect_error"))
    got = page(cache, 2.0)
    assert ("app_value", ()) not in got and got[("metrics_adapter_up", ())] == 0
    assert got[("metrics_adapter_scrapes_total", (("result", "connect_error"),))] == 1


def test_mapping_problems_are_counted_on_the_page(tmp_path: Path) -> None:
    config = config_from(
        tmp_path, "metrics: [{name: r, path: '$.routes[*]', value: $.nope, labels: {x: $.route}}]"
    )
    families, problems = map_document(config.rules(), WEBAPP_STATUS)
    cache = ScrapeCache(ttl=1.0, serve_stale_for=0.0)
    cache.record(Outcome("ok", 0.01, 1.0, 1.0, families=tuple(families), problems=tuple(problems)))
    got = page(cache, 1.0)
    assert got[("metrics_adapter_mapping_problems", (("metric", "r"),))] == 2


# --- config --------------------------------------------------------------------------------------


def test_defaults_and_env_overrides(tmp_path: Path) -> None:
    config = load(AdapterConfig, None, env_prefix=ENV_PREFIX, environ={})
    assert (config.listen, config.path, config.admin.listen) == (
        "0.0.0.0:9102",
        "/metrics",
        "127.0.0.1:9103",
    )
    assert config.target.url == "http://127.0.0.1:8080/status"
    assert (config.target.timeout, config.target.cache_ttl, config.target.serve_stale_for) == (
        2.0,
        1.0,
        0.0,
    )
    config = config_from(
        tmp_path,
        "target: {timeout: 250ms, serve_stale_for: 1m}\nmetrics: [{name: a, path: $.a}]",
        {f"{ENV_PREFIX}TARGET__URL": "http://127.0.0.1:9000/stats", f"{ENV_PREFIX}LISTEN": ":9200"},
    )
    assert config.target.url == "http://127.0.0.1:9000/stats" and config.listen == ":9200"
    assert (config.target.timeout, config.target.serve_stale_for) == (0.25, 60.0)


def test_json_exporter_type_and_valuetype_are_understood(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        """
        metrics:
          - {name: a, path: $.a, type: value}
          - {name: b, path: $.b, type: object, valuetype: counter}
          - {name: c, path: $.c, valuetype: gauge}
          - {name: d, path: $.d, type: counter}
        """,
    )
    assert [(r.type, r.scope) for r in config.rules()] == [
        ("untyped", "root"),
        ("counter", "item"),
        ("gauge", "auto"),
        ("counter", "auto"),
    ]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "metrics: [{name: a, path: '$.values['}]",
            "metrics[0].path: invalid selector '$.values[': at the end: expected an index",
        ),
        (
            "metrics: [{name: a, path: $.a}, {name: b, path: counter}]",
            "metrics[1].path: invalid selector 'counter': at character 1: a selector starts with $",
        ),
        (
            "metrics: [{name: a, path: $.a, labels: {route: 'r-{ .route'}}]",
            "metrics[0].labels.route: invalid selector '{ .route': '{' without a closing '}'",
        ),
        (
            "metrics: [{name: a, path: $.a, labels: {id: '$.x[?(@.y = 1)]'}}]",
            "metrics[0].labels.id: invalid selector '$.x[?(@.y = 1)]': at character 11: use ==",
        ),
        (
            "metrics: [{name: a, path: $.a, values: {count: count}}]",
            "metrics[0].values.count: expected a selector ($.key or {.key}) or a number",
        ),
        (
            "metrics: [{name: a, path: $.a, value: '$.'}]",
            "metrics[0].value: invalid selector '$.': at the end",
        ),
        (
            "metrics: [{name: 9lives, path: $.a}]",
            "metrics[0].name: '9lives' is not a valid metric name",
        ),
        (
            "metrics: [{name: a, path: $.a, labels: {bad-name: x}}]",
            "metrics[0].labels: label name 'bad-name' is not valid",
        ),
        (
            "metrics: [{name: a, path: $.a, type: summary}]",
            "metrics[0].type: Input should be 'gauge', 'counter', 'info', 'untyped', 'value' or",
        ),
        (
            "metrics: [{name: a, path: $.a, type: gauge, valuetype: counter}]",
            "metrics[0]: type 'gauge' and valuetype 'counter' disagree",
        ),
        (
            "metrics: [{name: a, path: $.a, type: info, value: $.b}]",
            "metrics[0]: an info metric has no value",
        ),
        (
            "metrics: [{name: a, path: $.a, type: counter}, {name: a, path: $.b}]",
            "metrics[1].name: a is also made by metrics[0] as a counter; one name, one type",
        ),
        (
            "metrics: [{name: a, path: $.a, type: counter}, {name: a_total, path: $.b}]",
            "metrics[1].name: the page would have two a_total: this gauge and the counter a of",
        ),
        (
            "metrics: [{name: metrics_adapter_up, path: $.a}]",
            "metrics[0].name: names starting with metrics_adapter_ are the adapter's own",
        ),
        ("metrics: [{name: a, path: $.a, engine: cel}]", "metrics[0].engine: unknown field"),
        ("metrics: [{name: a}]", "metrics[0].path: Field required"),
        ("target: {url: 'https://127.0.0.1/status'}", "target.url: must be an http:// URL"),
        ("target: {timeout: 2 weeks}", "target.timeout: invalid duration '2 weeks'"),
        ("target: {timeout: 0}", "target.timeout: Input should be greater than 0"),
        ("target: {format: xml}", "target.format: Input should be 'auto', 'json' or 'text'"),
        ("listen: localhost", "listen: invalid address 'localhost': expected HOST:PORT"),
        ("path: /readyz", "path: /readyz is the adapter's own health endpoint"),
        ("modules: {default: {metrics: []}}", "modules: json_exporter's modules are not used"),
    ],
)
def test_config_errors_name_the_file_the_field_path_and_the_reason(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config_from(tmp_path, yaml_text)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'adapter.yaml'}: "), text
    assert message in text, text
