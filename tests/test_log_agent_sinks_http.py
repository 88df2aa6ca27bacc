"""log-agent's HTTP sinks (http, loki, elasticsearch, otlp) against real HTTP servers started here.

Each body is checked against the receiving API's documented format: Loki's push JSON, the
Elasticsearch `_bulk` NDJSON (with a small fake `_bulk` that keeps documents by _id), and OTLP
JSON parsed by opentelemetry-proto's own protobuf schema.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from google.protobuf import json_format
from multidict import CIMultiDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from pydantic import ValidationError

from podkit.images.log_agent.event import Batch, Event
from podkit.images.log_agent.sinks.base import RejectedError, RetryableError, TooLargeError
from podkit.images.log_agent.sinks.elasticsearch import (
    BulkResult,
    ElasticsearchConfig,
    ElasticsearchSink,
    bulk_body,
    read_bulk_answer,
)
from podkit.images.log_agent.sinks.http import HttpConfig, HttpSink
from podkit.images.log_agent.sinks.loki import LokiConfig, LokiSink, push_body
from podkit.images.log_agent.sinks.otlp import OtlpConfig, OtlpSink, export_body

K8S = {
    "pod_name": "web-7f9c",
    "namespace_name": "shop",
    "pod_id": "0d5a6e4c-1111-2222-3333-444455556666",
    "labels": {"app": "shop", "app.kubernetes.io/name": "shop-web"},
    "container_name": "web",
    "host": "node-a",
}
COMMON = {"source": "file", "file": "/var/log/web/access.log", "kubernetes": K8S}
T0 = "2026-11-25T22:15:08.123456789Z"
T0_NS = int(datetime(2026, 11, 25, 22, 15, 8, tzinfo=UTC).timestamp()) * 10**9 + 123456789
TOKEN = "s3cr3t-t0ken-value"
PASSWORD = "pa55-w0rd-value"
API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="


# -- a real HTTP server that records what it is sent -------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    raw: bytes  # as it came over the wire (still gzip-compressed if it was)
    peer_cn: str | None = None

    @property
    def body(self) -> bytes:
        if self.headers.get("Content-Encoding") == "gzip":
            return gzip.decompress(self.raw)
        return self.raw

    def json(self) -> Any:
        return json.loads(self.body)


Reply = Callable[[Request], Awaitable[tuple[int, bytes]]]


def answer(status: int, body: bytes | str = b"") -> Reply:
    data = body.encode() if isinstance(body, str) else body

    async def reply(_: Request) -> tuple[int, bytes]:
        return status, data

    return reply


class Receiver:
    """An HTTP(S) server on 127.0.0.1 (a free port) recording requests; `reply` answers them."""

    def __init__(self, reply: Reply | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply or answer(200)
        self.tls = tls
        self.requests: list[Request] = []
        self.release = asyncio.Event()  # lets handlers that wait for it finish at exit
        self.url = ""

    async def _handle(self, req: web.BaseRequest) -> web.Response:
        peer = req.transport.get_extra_info("peercert") if req.transport else None
        cn = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
        seen = Request(
            req.method, req.path, dict(req.query), CIMultiDict(req.headers), await req.read(), cn
        )
        self.requests.append(seen)
        status, body = await self.reply(seen)
        return web.Response(status=status, body=body)

    async def __aenter__(self) -> Receiver:
        # auto_decompress=False: the tests see the body as sent, to check it is compressed.
        self._runner = web.ServerRunner(web.Server(self._handle, auto_decompress=False))
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release.set()
        await self._runner.cleanup()


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


class AnySink(Protocol):
    def encode(self, batch: Batch) -> bytes: ...
    async def start(self) -> None: ...
    async def send(self, payload: bytes) -> None: ...
    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def running(sink: AnySink) -> AsyncIterator[AnySink]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


def batch(*events: Event, common: Event | None = None) -> Batch:
    return Batch("file_1", [dict(e) for e in events], dict(COMMON if common is None else common))


def http_sink(url: str, **cfg: Any) -> HttpSink:
    return HttpSink("web_out", HttpConfig.model_validate({"type": "http", "endpoint": url, **cfg}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- start-up ----------------------------------------------------------------------------------


def test_importing_the_http_sinks_does_not_import_aiohttp() -> None:
    # The agent must start fast when no HTTP sink is configured: aiohttp costs ~0.3 s.
    code = (
        "import sys\n"
        "from podkit.images.log_agent.sinks import elasticsearch, http, loki, otlp\n"
        "print('aiohttp' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- http sink and the shared client -------------------------------------------------------------


@async_test
async def test_http_sink_posts_json_lines_with_headers_and_basic_auth() -> None:
    events: list[Event] = [
        {"time": T0, "message": "GET /"},
        {"time": T0, "message": "GET /cart", "status": 404},
    ]
    async with Receiver() as server:
        auth = {"strategy": "basic", "user": "shipper", "password": PASSWORD}
        sink = http_sink(f"{server.url}/ingest?tag=web", headers={"X-Team": "shop"}, auth=auth)
        async with running(sink):
            await sink.send(sink.encode(batch(*events)))
    [req] = server.requests
    assert (req.method, req.path, req.query) == ("POST", "/ingest", {"tag": "web"})
    assert req.headers["Content-Type"] == "application/x-ndjson"
    assert req.headers["X-Team"] == "shop"
    credentials = base64.b64encode(f"shipper:{PASSWORD}".encode()).decode()
    assert req.headers["Authorization"] == f"Basic {credentials}"
    assert req.body.endswith(b"\n")
    assert [json.loads(line) for line in req.body.splitlines()] == [{**e, **COMMON} for e in events]


@async_test
async def test_http_sink_json_array_format() -> None:
    events = [{"time": T0, "message": "one"}, {"time": T0, "message": "two\nlines"}]
    async with Receiver() as server:
        sink = http_sink(server.url, format="json_array")
        async with running(sink):
            await sink.send(sink.encode(batch(*events)))
    [req] = server.requests
    assert req.headers["Content-Type"] == "application/json"
    assert req.json() == [{**e, **COMMON} for e in events]


@async_test
async def test_gzip_compression_sends_a_gzip_body_that_decodes_to_the_payload() -> None:
    async with Receiver() as server:
        sink = http_sink(server.url, compression="gzip")
        payload = sink.encode(batch(*[{"time": T0, "message": f"line {n}"} for n in range(500)]))
        async with running(sink):
            await sink.send(payload)
    [req] = server.requests
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.raw[:2] == b"\x1f\x8b" and len(req.raw) < len(payload) / 5
    assert gzip.decompress(req.raw) == payload


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
@async_test
async def test_server_errors_and_throttling_are_retryable(status: int) -> None:
    body = "overloaded, try later " * 30
    async with Receiver(answer(status, body)) as server:
        sink = http_sink(f"{server.url}/in?api_key=k3y")
        async with running(sink):
            with pytest.raises(RetryableError) as caught:
                await sink.send(b"{}\n")
    message = str(caught.value)
    assert message.startswith(f"web_out: POST {server.url}/in: HTTP {status}: overloaded, try")
    assert "k3y" not in message  # the query string may hold a key: never shown
    assert len(message) < len(f"web_out: POST {server.url}/in: HTTP {status}: ") + 201
    assert caught.value.remaining is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 301])
@async_test
async def test_other_statuses_are_refusals_retried_or_dropped_as_configured(status: int) -> None:
    async with Receiver(answer(status, '{"error":"bad request"}')) as server:
        kept, dropping = http_sink(server.url), http_sink(server.url, on_client_error="drop")
        async with running(kept), running(dropping):
            with pytest.raises(RetryableError) as retried:
                await kept.send(b"{}\n")
            with pytest.raises(RejectedError) as dropped:
                await dropping.send(b"{}\n")
    # By default the data waits (credentials get fixed); the sink shows as blocked meanwhile.
    assert retried.value.refused == f"HTTP {status}"
    assert dropped.value.reason == f"http_{status}"
    for caught in (retried, dropped):
        assert f"HTTP {status}" in str(caught.value) and "bad request" in str(caught.value)


@async_test
async def test_413_is_too_large_whatever_on_client_error_says() -> None:
    async with Receiver(answer(413, "<html>413 Request Entity Too Large</html>")) as server:
        sink = http_sink(server.url, on_client_error="drop")
        async with running(sink):
            with pytest.raises(TooLargeError, match="HTTP 413"):
                await sink.send(b"{}\n")


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize(
    ("cfg", "secret"),
    [
        ({"auth": {"strategy": "bearer", "token": TOKEN}}, TOKEN),
        ({"auth": {"strategy": "basic", "user": "u", "password": PASSWORD}}, PASSWORD),
        ({"headers": {"Authorization": f"ApiKey {API_KEY}"}}, API_KEY),  # Elasticsearch's
    ],
)
@async_test
async def test_secrets_never_appear_in_error_messages(
    status: int, cfg: dict[str, Any], secret: str
) -> None:
    async def echo_auth(req: Request) -> tuple[int, bytes]:
        return status, f"denied for {req.headers['Authorization']}".encode()

    async with Receiver(echo_auth) as server:
        sink = http_sink(server.url, **cfg)
        async with running(sink):
            with pytest.raises((RetryableError, RejectedError)) as caught:
                await sink.send(b"{}\n")
    sent = server.requests[0].headers["Authorization"]
    assert secret in sent or secret in base64.b64decode(sent.split()[1]).decode()
    message = str(caught.value)
    assert "denied for" in message and "***" in message
    assert secret not in message and sent.split()[1] not in message
    if "auth" in cfg:  # masked in the config's repr and dump (--dry-run) too
        assert secret not in repr(sink.cfg) and secret not in sink.cfg.model_dump_json()


@async_test
async def test_connection_refused_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/in"
    sink = http_sink(url)
    async with running(sink):
        with pytest.raises(RetryableError) as caught:
            await sink.send(b"{}\n")
    assert str(caught.value).startswith(f"web_out: POST {url}: ")
    assert "connect" in str(caught.value).lower()


@async_test
async def test_no_answer_within_the_timeout_is_retryable() -> None:
    async def never(_: Request) -> tuple[int, bytes]:
        await server.release.wait()
        return 200, b""

    async with Receiver(never) as server:
        sink = http_sink(server.url, timeout=0.3)
        async with running(sink):
            with pytest.raises(RetryableError, match=r"no answer within 0\.3 s"):
                await sink.send(b"{}\n")


@async_test
async def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    async with Receiver() as server:
        sink = http_sink(server.url, auth={"strategy": "bearer", "token_file": str(token_file)})
        async with running(sink):
            await sink.send(b"{}\n")
            # As the kubelet rotates a projected token: a new file swapped into place.
            (tmp_path / "token.new").write_text("second-token-rotated\n")
            os.replace(tmp_path / "token.new", token_file)
            await sink.send(b"{}\n")
            token_file.unlink()
            with pytest.raises(RetryableError) as caught:
                await sink.send(b"{}\n")
    sent = [r.headers["Authorization"] for r in server.requests]
    assert sent == ["Bearer first-token", "Bearer second-token-rotated"]
    assert f"cannot read auth.token_file {token_file}" in str(caught.value)
    assert "token-rotated" not in str(caught.value)


@pytest.mark.parametrize(
    ("cfg", "error"),
    [
        ({"endpoint": "http://user:hunter2@example.com"}, "credentials in the URL"),
        ({"endpoint": "ftp://example.com"}, "need an http:// or https:// URL"),
        ({"endpoint": "http://example.com", "tls": {"verify": False}}, "need an https://"),
        ({"endpoint": "http://e.com", "headers": {"Content-Encoding": "br"}}, "set by the sink"),
        (
            {"endpoint": "http://e.com", "headers": {"authorization": "x"},
             "auth": {"strategy": "bearer", "token": "t"}},
            "either auth or an Authorization header",
        ),
        (
            {"endpoint": "http://e.com",
             "auth": {"strategy": "basic", "user": "u", "password": "p", "password_file": "/f"}},
            "exactly one of password and password_file",
        ),
        ({"endpoint": "http://e.com", "auth": {"strategy": "bearer"}}, "exactly one of token"),
        ({"endpoint": "http://e.com", "timeout": 0}, "greater than 0"),
    ],
)  # fmt: skip
def test_config_errors_say_what_is_wrong(cfg: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HttpConfig.model_validate({"type": "http", **cfg})
    assert error in str(caught.value)
    assert "hunter2" not in "".join(e["msg"] for e in caught.value.errors())


# -- TLS ---------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server: tuple[Path, Path]  # cert, key
    client: tuple[Path, Path]

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.server)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A self-signed CA, a server certificate for 127.0.0.1 and a client certificate."""
    assert shutil.which("openssl"), "the Makefile installs openssl (DEBS)"
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-days", "1", "-subj", "/CN=podkit test CA",
            "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    uses = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in uses.items():
        (d / f"{name}.ext").write_text(f"basicConstraints=CA:FALSE\n{ext}")
        openssl("req", *key, "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")  # fmt: skip
    return Pki(
        d / "ca.pem", (d / "server.pem", d / "server.key"), (d / "client.pem", d / "client.key")
    )


@async_test
async def test_tls_trusts_the_configured_ca_and_only_it(pki: Pki) -> None:
    async with Receiver(tls=pki.server_context()) as server:
        trusting = http_sink(server.url, tls={"ca_file": str(pki.ca)})
        system_cas = http_sink(server.url)
        not_verifying = http_sink(server.url, tls={"verify": False})
        async with running(trusting), running(system_cas), running(not_verifying):
            await trusting.send(b'{"n":1}\n')
            with pytest.raises(RetryableError, match="certificate verify failed"):
                await system_cas.send(b'{"n":2}\n')
            await not_verifying.send(b'{"n":3}\n')
    assert [r.body for r in server.requests] == [b'{"n":1}\n', b'{"n":3}\n']


@async_test
async def test_tls_client_certificate(pki: Pki) -> None:
    async with Receiver(tls=pki.server_context(require_client_cert=True)) as server:
        cert, key = pki.client
        with_cert = http_sink(
            server.url, tls={"ca_file": str(pki.ca), "cert_file": str(cert), "key_file": str(key)}
        )
        without_cert = http_sink(server.url, tls={"ca_file": str(pki.ca)})
        async with running(with_cert), running(without_cert):
            await with_cert.send(b"{}\n")
            with pytest.raises(RetryableError):
                await without_cert.send(b"{}\n")
    assert [r.peer_cn for r in server.requests] == ["client"]


@async_test
async def test_missing_ca_file_fails_start_naming_the_setting(tmp_path: Path) -> None:
    sink = http_sink("https://127.0.0.1:1", tls={"ca_file": str(tmp_path / "nope.pem")})
    with pytest.raises(OSError, match=r"tls\.ca_file .*nope\.pem: No such file"):
        await sink.start()


# -- loki --------------------------------------------------------------------------------------


def loki_sink(url: str = "http://127.0.0.1:3100", **cfg: Any) -> LokiSink:
    return LokiSink("loki", LokiConfig.model_validate({"type": "loki", "endpoint": url, **cfg}))


@async_test
async def test_loki_push_groups_streams_by_label_set_in_event_order() -> None:
    labels = {"job": "log-agent", "namespace": "{kubernetes.namespace_name}", "io": "{stream}"}
    events = [
        {"time": T0, "message": "out 1", "stream": "stdout"},
        {"time": "2026-11-25T23:15:09.5+01:00", "message": "err 1", "stream": "stderr"},
        {"time": T0, "message": "out 2", "stream": "stdout"},
        {"time": T0, "message": "no stream"},
    ]
    async with Receiver(answer(204)) as server:
        sink = loki_sink(f"{server.url}/", labels=labels, tenant_id="team-a")
        async with running(sink):
            await sink.send(sink.encode(batch(*events)))
    [req] = server.requests
    assert req.path == "/loki/api/v1/push"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Scope-OrgID"] == "team-a"
    streams = {json.dumps(s["stream"], sort_keys=True): s["values"] for s in req.json()["streams"]}
    base = {"job": "log-agent", "namespace": "shop"}
    key = functools.partial(json.dumps, sort_keys=True)
    assert set(streams) == {key({**base, "io": "stdout"}), key({**base, "io": "stderr"}), key(base)}
    out = streams[key({**base, "io": "stdout"})]
    assert [json.loads(line)["message"] for _, line in out] == ["out 1", "out 2"]
    assert [ts for ts, _ in out] == [str(T0_NS), str(T0_NS)]
    [(err_ts, err_line)] = streams[key({**base, "io": "stderr"})]
    assert err_ts == str(T0_NS - 123456789 + 10**9 + 500_000_000)  # +01:00 is an hour ahead
    # Fields carried whole by a label are not repeated in the line; the rest of the event is.
    line = json.loads(err_line)
    assert "stream" not in line and "namespace_name" not in line["kubernetes"]
    assert line["kubernetes"]["pod_name"] == "web-7f9c" and line["file"] == COMMON["file"]


def test_loki_default_labels_leave_out_empty_values() -> None:
    k8s_a = {**K8S, "container_name": "web"}
    k8s_b = {k: v for k, v in K8S.items() if k != "container_name"}
    common = {"source": "tcp"}
    sink = loki_sink()
    body = json.loads(
        push_body(
            sink.encode(
                batch(
                    {"time": T0, "message": "a", "kubernetes": k8s_a},
                    {"time": T0, "message": "b", "kubernetes": k8s_b},
                    common=common,
                )
            )
        )
    )
    got = [
        (s["stream"], [json.loads(line)["message"] for _, line in s["values"]])
        for s in body["streams"]
    ]
    base = {"job": "log-agent", "namespace": "shop", "pod": "web-7f9c"}
    assert got == [({**base, "container": "web"}, ["a"]), (base, ["b"])]


def test_loki_message_line_format_and_json_values_as_text() -> None:
    sink = loki_sink(line_format="message", labels={"status": "{status}", "job": "web"})
    body = json.loads(
        push_body(sink.encode(batch({"time": T0, "message": "GET / 200", "status": 200})))
    )
    assert body == {"streams": [{"stream": {"status": "200", "job": "web"},
                                 "values": [[str(T0_NS), "GET / 200"]]}]}  # fmt: skip


def test_loki_payloads_join_into_one_push_with_streams_by_label_set() -> None:
    sink = loki_sink(line_format="message", labels={"app": "{app}"})
    first = sink.encode(batch({"time": T0, "message": "a1", "app": "a"},
                              {"time": T0, "message": "b1", "app": "b"}))  # fmt: skip
    second = sink.encode(batch({"time": T0, "message": "a2", "app": "a"}))
    body = json.loads(push_body(first + second))
    got = [(s["stream"], [v for _, v in s["values"]]) for s in body["streams"]]
    assert got == [({"app": "a"}, ["a1", "a2"]), ({"app": "b"}, ["b1"])]


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        ({"app-name": "x"}, "letters, digits and _"),
        ({"1st": "x"}, "not starting with a digit"),
        ({"__name__": "x"}, "reserved"),
        ({"app": "{kubernetes..labels}"}, "bad field path"),
        ({}, "at least 1 item"),
    ],
)
def test_loki_label_names_are_checked(labels: dict[str, str], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        LokiConfig.model_validate({"type": "loki", "labels": labels})


# -- elasticsearch -----------------------------------------------------------------------------


def es_sink(url: str = "http://127.0.0.1:9200", **cfg: Any) -> ElasticsearchSink:
    cfg = {"type": "elasticsearch", "endpoint": url, **cfg}
    return ElasticsearchSink("es", ElasticsearchConfig.model_validate(cfg))


def bulk_pairs(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    assert body.endswith(b"\n")
    lines = [json.loads(line) for line in body.splitlines()]
    return list(zip(lines[::2], lines[1::2], strict=True))


@dataclass
class FakeElasticsearch:
    """Enough of `_bulk` for the sink: `create` refuses an _id the index has (409); a message
    holding "unmappable" is a mapping error (400); one holding "busy" is refused once (429)."""

    docs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    refused: set[tuple[str, str]] = field(default_factory=set)

    async def bulk(self, req: Request) -> tuple[int, bytes]:
        items = []
        for action, doc in bulk_pairs(req.body):
            key = (action["create"]["_index"], action["create"]["_id"])
            if "busy" in doc["message"] and key not in self.refused:
                self.refused.add(key)
                status, kind = 429, "es_rejected_execution_exception"
            elif "unmappable" in doc["message"]:
                status, kind = 400, "mapper_parsing_exception"
            elif key in self.docs:
                status, kind = 409, "version_conflict_engine_exception"
            else:
                self.docs[key] = doc
                status, kind = 201, ""
            item: dict[str, Any] = {"_index": key[0], "_id": key[1], "status": status}
            if kind:
                item["error"] = {"type": kind, "reason": f"{kind} for [{key[1]}]"}
            items.append({"create": item})
        errors = any(i["create"]["status"] >= 300 for i in items)
        return 200, json.dumps({"took": 3, "errors": errors, "items": items}).encode()


def test_es_bulk_body_pairs_actions_and_documents() -> None:
    events: list[Event] = [
        {"_id": "f1:0", "time": "2026-11-25T23:59:59.999Z", "message": "late"},
        {"_id": "f1:80", "time": "2026-11-26T00:00:00Z", "message": "next day", "status": 200},
        {"_id": "f1:90", "time": "2026-11-26T00:30:00+01:00", "message": "still the 25th in UTC"},
    ]
    pairs = bulk_pairs(bulk_body(es_sink().encode(batch(*events))))
    assert [a for a, _ in pairs] == [
        {"create": {"_index": "log-agent-2026.11.25", "_id": "f1:0"}},
        {"create": {"_index": "log-agent-2026.11.26", "_id": "f1:80"}},
        {"create": {"_index": "log-agent-2026.11.25", "_id": "f1:90"}},
    ]
    first = pairs[1][1]
    assert first == {"@timestamp": "2026-11-26T00:00:00Z", "message": "next day", "status": 200,
                     **COMMON}  # fmt: skip
    assert all("_id" not in doc and "time" not in doc for _, doc in pairs)


def test_es_ids_without_an_event_id_are_deterministic_and_distinct() -> None:
    events = [{"time": T0, "message": "same"}, {"time": T0, "message": "same"},
              {"time": T0, "message": "other"}]  # fmt: skip
    sink = es_sink(index="logs-podkit")  # a fixed name: an index, alias or data stream
    first, again = sink.encode(batch(*events)), sink.encode(batch(*events))
    assert first == again
    pairs = bulk_pairs(bulk_body(first))
    ids = [a["create"]["_id"] for a, _ in pairs]
    assert len(set(ids)) == 3  # two identical lines stay two documents
    doc_line = bulk_body(first).splitlines()[1]
    assert ids[0] == hashlib.sha1(doc_line).hexdigest()
    assert {a["create"]["_index"] for a, _ in pairs} == {"logs-podkit"}


@async_test
async def test_es_partial_failure_retries_only_failed_items_and_a_replay_is_duplicates() -> None:
    es = FakeElasticsearch()
    events = [
        {"_id": "f1:0", "time": T0, "message": "ok 1"},
        {"_id": "f1:10", "time": T0, "message": "busy node"},
        {"_id": "f1:20", "time": T0, "message": "unmappable"},
        {"_id": "f1:30", "time": T0, "message": "ok 2"},
    ]
    async with Receiver(es.bulk) as server:
        sink = es_sink(server.url)
        payload = sink.encode(batch(*events))
        async with running(sink):
            with pytest.raises(RetryableError) as caught:
                await sink.send(payload)
            assert caught.value.rejected == {"es_400_mapper_parsing_exception": 1}
            assert "es_rejected_execution_exception for [f1:10]" in str(caught.value)
            remaining = caught.value.remaining
            assert remaining is not None
            assert [a["create"]["_id"] for a, _ in bulk_pairs(bulk_body(remaining))] == ["f1:10"]
            assert await sink.send(remaining) == {}  # what the buffer does next
            # A replay after a crash: what was indexed comes back 409, a duplicate, no error.
            assert await sink.send(payload) == {"es_400_mapper_parsing_exception": 1}
    assert sorted(i for _, i in es.docs) == ["f1:0", "f1:10", "f1:30"]
    bodies = [bulk_pairs(r.body) for r in server.requests]
    assert [len(b) for b in bodies] == [4, 1, 4]
    assert {r.path for r in server.requests} == {"/_bulk"}
    assert server.requests[0].headers["Content-Type"] == "application/x-ndjson"


@async_test
async def test_es_all_duplicates_is_delivered_and_http_429_retries_everything() -> None:
    es = FakeElasticsearch()
    payload = es_sink().encode(batch({"_id": "f1:0", "time": T0, "message": "ok"}))
    async with Receiver(es.bulk) as server:
        sink = es_sink(server.url)
        async with running(sink):
            assert await sink.send(payload) == {}
            assert await sink.send(payload) == {}  # a duplicate: delivered already
        server.reply = answer(429, '{"error":"too many requests"}')
        async with running(sink):
            with pytest.raises(RetryableError) as caught:
                await sink.send(payload)
    assert caught.value.remaining is None and not caught.value.rejected
    assert read_bulk_answer(payload, b'{"errors":false}')[0] == BulkResult(created=1)


@pytest.mark.parametrize("index", ["Logs-%Y", "logs podkit", "-logs", "logs/%Y"])
def test_es_index_names_are_checked(index: str) -> None:
    with pytest.raises(ValidationError, match="index"):
        ElasticsearchConfig.model_validate({"type": "elasticsearch", "index": index})


# -- otlp --------------------------------------------------------------------------------------


def otlp_sink(url: str = "http://127.0.0.1:4318", **cfg: Any) -> OtlpSink:
    return OtlpSink("otel", OtlpConfig.model_validate({"type": "otlp", "endpoint": url, **cfg}))


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: json_format.MessageToDict(kv.value) for kv in kvs}


@async_test
async def test_otlp_body_is_a_valid_export_logs_request() -> None:
    event = {
        "_id": "f1:120",
        "time": T0,
        "message": "payment failed",
        "level": "warn",
        "status": 502,
        "request_time": 0.25,
        "cached": False,
        "user": None,
        "tags": ["a", 1],
        "http": {"method": "POST"},
    }
    async with Receiver(answer(200, "{}")) as server:
        sink = otlp_sink(server.url)
        async with running(sink):
            await sink.send(sink.encode(batch(event, {"time": "yesterday", "message": "x"})))
    [req] = server.requests
    assert req.path == "/v1/logs" and req.headers["Content-Type"] == "application/json"
    request = json_format.Parse(req.body, ExportLogsServiceRequest())  # unknown keys would fail
    [resource_logs] = request.resource_logs
    assert attributes(resource_logs.resource.attributes) == {
        "service.name": {"stringValue": "shop-web"},
        "k8s.namespace.name": {"stringValue": "shop"},
        "k8s.pod.name": {"stringValue": "web-7f9c"},
        "k8s.pod.uid": {"stringValue": K8S["pod_id"]},
        "k8s.container.name": {"stringValue": "web"},
        "k8s.node.name": {"stringValue": "node-a"},
        "k8s.pod.label.app": {"stringValue": "shop"},
        "k8s.pod.label.app.kubernetes.io/name": {"stringValue": "shop-web"},
    }
    [scope_logs] = resource_logs.scope_logs
    assert scope_logs.scope.name == "podkit.log-agent"
    first, second = scope_logs.log_records
    assert first.time_unix_nano == T0_NS and first.observed_time_unix_nano > 0
    assert first.severity_number == SeverityNumber.SEVERITY_NUMBER_WARN
    assert first.severity_text == "warn" and first.body.string_value == "payment failed"
    assert attributes(first.attributes) == {
        "log.record.uid": {"stringValue": "f1:120"},
        "status": {"intValue": "502"},
        "request_time": {"doubleValue": 0.25},
        "cached": {"boolValue": False},
        "user": {},
        "tags": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}},
        "http": {"kvlistValue": {"values": [{"key": "method", "value": {"stringValue": "POST"}}]}},
        "source": {"stringValue": "file"},
        "log.file.path": {"stringValue": COMMON["file"]},
    }
    # A time that does not parse: unknown (0) in the record, the text kept as an attribute.
    assert second.time_unix_nano == 0 and second.severity_number == 0
    assert attributes(second.attributes)["time"] == {"stringValue": "yesterday"}


def test_otlp_groups_records_by_resource_and_maps_levels() -> None:
    sink = otlp_sink(service_name="checkout")
    other = {**K8S, "pod_name": "web-a1b2", "pod_id": "u-2"}
    levels: list[object] = ["ERROR", 30, "notice", "verbose"]
    events = [{"time": T0, "message": str(lv), "level": lv, "kubernetes": K8S if n % 2 else other}
              for n, lv in enumerate(levels)]  # fmt: skip
    request = json_format.Parse(
        export_body(sink.encode(batch(*events, common={"source": "tcp"}))),
        ExportLogsServiceRequest(),
    )
    by_pod = {
        attributes(rl.resource.attributes)["k8s.pod.name"]["stringValue"]: rl
        for rl in request.resource_logs
    }
    assert set(by_pod) == {"web-7f9c", "web-a1b2"}
    for rl in by_pod.values():
        assert attributes(rl.resource.attributes)["service.name"] == {"stringValue": "checkout"}
    records = [r for rl in request.resource_logs for r in rl.scope_logs[0].log_records]
    got = {r.body.string_value: (r.severity_text, r.severity_number) for r in records}
    assert got == {"ERROR": ("ERROR", 17), "30": ("INFO", 9), "notice": ("notice", 10),
                   "verbose": ("verbose", 0)}  # fmt: skip
    assert [r.body.string_value for r in by_pod["web-a1b2"].scope_logs[0].log_records] == [
        "ERROR",
        "notice",
    ]


@async_test
async def test_otlp_partial_success_counts_the_rejected_records() -> None:
    reply = '{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"timestamp too old"}}'
    async with Receiver(answer(200, reply)) as server:
        sink = otlp_sink(server.url)
        events = [{"time": T0, "message": f"m{n}"} for n in range(5)]
        async with running(sink):
            rejected = await sink.send(sink.encode(batch(*events)))
    assert rejected == {"otlp_partial_success": 2}
