"""The auth-adapter end to end: the image as a process, a real authlib authorization server and a
resource server that checks its tokens (tests/oauth_harness.py), and real HTTP clients."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from log_agent_harness import metric_samples
from oauth_harness import AuthAdapter, OAuthServer, ResourceServer, SecretVolume
from proxy_harness import TlsEchoServer, free_port, issue_cert, make_ca, poll_until

SECRET = "s3cr:t+pa ss%"  # characters client_secret_basic must form-encode


def request(
    adapter: AuthAdapter,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", adapter.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Setup:
    def __init__(
        self, idp: OAuthServer, api: ResourceServer, secrets: SecretVolume, tmp: Path
    ) -> None:
        self.idp, self.api, self.secrets, self.tmp = idp, api, secrets, tmp

    def upstream(self, **extra: Any) -> dict[str, Any]:
        oauth2 = {
            "token_url": self.idp.token_url,
            "client_id": "app",
            "client_secret_file": str(self.secrets.path("client_secret")),
            "scopes": ["read"],
            **extra.pop("oauth2", {}),
        }
        return {"name": "api", "prefix": "/api/", "url": self.api.url + "/v1/", "oauth2": oauth2}

    def adapter(self, *upstreams: dict[str, Any], **config: Any) -> AuthAdapter:
        return AuthAdapter(self.tmp, {"upstreams": list(upstreams) or [self.upstream()], **config})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    idp = OAuthServer()
    try:
        idp.add_client("app", secret=SECRET)
        api = ResourceServer(idp)
        try:
            secrets = SecretVolume(tmp_path / "secret", {"client_secret": SECRET})
            yield Setup(idp, api, secrets, tmp_path)
        finally:
            api.stop()
    finally:
        idp.stop()


@contextlib.contextmanager
def running(adapter: AuthAdapter) -> Iterator[AuthAdapter]:
    try:
        yield adapter
    finally:
        adapter.stop()


def secrets_in(text: str, setup: Setup) -> list[str]:
    """Every secret the adapter handled that shows up in `text`: the client secret, the tokens,
    and the Authorization fields the token endpoint received (and may echo)."""
    values = [SECRET] + [t.access_token for t in setup.idp.issued()]
    for seen in setup.idp.requests():
        if "Authorization" in seen.headers:
            values += [seen.headers["Authorization"], seen.headers["Authorization"].split()[1]]
    return [v for v in values if v in text]


# -- passing requests through ----------------------------------------------------------------


def test_the_apps_request_reaches_the_api_with_a_token_and_otherwise_unchanged(
    setup: Setup,
) -> None:
    with running(setup.adapter()) as adapter:
        status, _, body = request(
            adapter,
            "/api/orders/7?expand=items&x=%2F",
            method="PATCH",
            body=b'{"qty": 2}',
            headers={
                "Authorization": "Basic bm90OnRoaXM=",  # the app's own: replaced, never sent
                "Content-Type": "application/json",
                "X-Trace": "abc",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "dropped as hop-by-hop",
            },
        )
        assert status == 200, body
        answer = json.loads(body)
        assert answer["client_id"] == "app" and answer["scope"] == "read"
        assert answer["method"] == "PATCH"
        assert answer["path"] == "/v1/orders/7?expand=items&x=%2F"  # prefix -> the URL's path
        assert answer["body"] == '{"qty": 2}'
        seen = {k.lower(): v for k, v in setup.api.seen[-1]["headers"].items()}
        assert seen["authorization"].startswith("Bearer ")
        assert seen["authorization"][7:] in {t.access_token for t in setup.idp.issued()}
        assert seen["host"] == setup.api.url.removeprefix("http://")
        assert seen["content-type"] == "application/json" and seen["x-trace"] == "abc"
        assert "x-hop" not in seen
        assert not [k for k in seen if k.startswith("x-forwarded-")]  # the API is outside
        assert seen["x-request-id"]
        assert setup.idp.token_requests == 1


def test_a_large_body_streams_through_both_ways(setup: Setup) -> None:
    with running(setup.adapter()) as adapter:
        payload = bytes(range(256)) * 4096  # 1 MiB
        status, _, body = request(adapter, "/api/upload", method="POST", body=payload)
        assert status == 200, body[:200]
        got = setup.api.seen[-1]["body"]
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_a_path_outside_every_prefix_gets_404_and_never_reaches_the_api(setup: Setup) -> None:
    with running(setup.adapter()) as adapter:
        before = len(setup.api.seen)
        status, _, _ = request(adapter, "/elsewhere")
        assert status == 404
        assert len(setup.api.seen) == before


def test_200_concurrent_requests_on_a_cold_cache_make_one_token_request(setup: Setup) -> None:
    setup.idp.delay = 0.5  # the first token takes a while: all 200 requests wait for it
    with running(setup.adapter(readiness={"require_token": False})) as adapter:
        results: list[int] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            status, _, _ = request(adapter, f"/api/cold/{i}")
            with lock:
                results.append(status)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 200 and set(results) == {200}, results
        assert setup.idp.token_requests == 1


# -- token lifetime, outages, 401 ------------------------------------------------------------


def test_short_lived_tokens_are_renewed_and_no_401_reaches_the_app(setup: Setup) -> None:
    setup.idp.expires_in = 2
    up = setup.upstream(oauth2={"refresh": {"margin": 0.5}})
    with running(setup.adapter(up)) as adapter:
        deadline = time.monotonic() + 4.5
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(request(adapter, "/api/poll")[0])
        assert set(statuses) == {200}, statuses
        assert setup.idp.token_requests >= 3  # the first and at least two refreshes


def test_an_idp_outage_keeps_the_valid_token_then_answers_503_saying_why(setup: Setup) -> None:
    setup.idp.expires_in = 2
    with running(setup.adapter()) as adapter:
        assert request(adapter, "/api/a")[0] == 200
        setup.idp.set_outage("503")
        assert request(adapter, "/api/b")[0] == 200  # the cached token is still valid

        def refused() -> tuple[int, dict[str, str], bytes] | None:
            answer = request(adapter, "/api/c")
            return answer if answer[0] == 503 else None

        status, headers, body = poll_until(refused, 6.0)
        doc = json.loads(body)
        assert doc["error"] == "no_token" and doc["upstream"] == "api"
        assert "503" in doc["reason"], doc
        assert headers["content-type"] == "application/json"
        assert not secrets_in(body.decode(), setup)
        setup.idp.set_outage(None)
        assert poll_until(lambda: request(adapter, "/api/d")[0] == 200, 10.0)


def test_a_revoked_token_is_replaced_and_the_request_sent_once_more(setup: Setup) -> None:
    with running(setup.adapter()) as adapter:
        assert request(adapter, "/api/first")[0] == 200
        tokens_before = setup.idp.token_requests
        setup.idp.revoke_all()
        api_before = len(setup.api.seen)
        status, _, body = request(adapter, "/api/again", method="POST", body=b"small body")
        assert status == 200, body
        assert json.loads(body)["body"] == "small body"
        assert len(setup.api.seen) - api_before == 2  # the 401, then the retry
        assert setup.idp.token_requests - tokens_before == 1
        assert adapter.stats()["clusters"]["api"]["auth_retries"] == 1


def test_a_401_to_a_body_that_cannot_be_replayed_is_passed_on_and_the_token_renewed(
    setup: Setup,
) -> None:
    with running(setup.adapter()) as adapter:
        assert request(adapter, "/api/first")[0] == 200
        setup.idp.revoke_all()
        api_before = len(setup.api.seen)
        big = b"x" * (256 * 1024)  # more than the proxy keeps for a replay
        status, headers, _ = request(adapter, "/api/big", method="POST", body=big)
        assert status == 401
        assert 'error="invalid_token"' in headers["www-authenticate"]
        assert len(setup.api.seen) - api_before == 1
        assert request(adapter, "/api/next")[0] == 200  # the next request has a new token


def test_403_insufficient_scope_is_passed_on_without_a_new_token(setup: Setup) -> None:
    up = setup.upstream()
    up["url"] = setup.api.url + "/"  # /api/scope/admin/x -> /scope/admin/x: needs scope admin
    with running(setup.adapter(up)) as adapter:
        assert request(adapter, "/api/first")[0] == 200
        tokens_before = setup.idp.token_requests
        api_before = len(setup.api.seen)
        status, headers, _ = request(adapter, "/api/scope/admin/x")
        assert status == 403
        assert "insufficient_scope" in headers["www-authenticate"]
        assert len(setup.api.seen) - api_before == 1
        assert setup.idp.token_requests == tokens_before


# -- operating it ----------------------------------------------------------------------------


def test_readyz_waits_for_a_first_token(setup: Setup) -> None:
    setup.idp.set_outage("503")
    with running(AuthAdapter(setup.tmp, {"upstreams": [setup.upstream()]}, wait_ready=False)) as a:
        assert a.admin_get("/healthz")[0] == 200
        assert a.admin_get("/readyz")[0] == 503
        setup.idp.set_outage(None)
        assert poll_until(lambda: a.admin_get("/readyz")[0] == 200, 10.0)


def test_metrics_show_token_fetches_cache_hits_statuses_and_retries(setup: Setup) -> None:
    with running(setup.adapter()) as adapter:
        for _ in range(3):
            assert request(adapter, "/api/m")[0] == 200
        setup.idp.revoke_all()
        assert request(adapter, "/api/m")[0] == 200
        samples = metric_samples(f"127.0.0.1:{adapter.admin_port}")
        assert (
            samples[("auth_adapter_token_fetches_total", (("result", "ok"), ("upstream", "api")))]
            == 2
        )
        assert samples[("auth_adapter_token_cache_hits_total", (("upstream", "api"),))] >= 3
        assert (
            samples[("podkit_proxy_upstream_requests_total", (("cluster", "api"), ("code", "200")))]
            == 4
        )
        assert samples[("podkit_proxy_upstream_auth_retries_total", (("cluster", "api"),))] == 1
        assert not secrets_in(adapter.metrics(), setup)


def test_no_secret_or_token_in_any_log_line(setup: Setup) -> None:
    setup.idp.echo_credentials_in_errors = True
    with running(setup.adapter()) as adapter:
        assert request(adapter, "/api/x")[0] == 200
        setup.idp.revoke_all()
        setup.idp.set_outage("503")
        request(adapter, "/api/y")  # 401, a failed token request, then a 503
        setup.secrets.update({"client_secret": "wrong"})
        setup.idp.set_outage(None)
        # The wrong secret refused, and the IdP quoting the credentials it got in its error.
        refused = lambda: any(r.error == "invalid_client" for r in setup.idp.requests())  # noqa: E731
        assert poll_until(lambda: request(adapter, "/api/z")[0] == 503 and refused(), 10.0)
        stats = json.dumps(adapter.stats())
    output = adapter.output()
    assert "token request failed" in output or "no_token" in output  # the failures were logged
    assert not secrets_in(output, setup), secrets_in(output, setup)
    assert not secrets_in(stats, setup)


def test_an_https_api_is_reached_with_the_configured_ca(setup: Setup, tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert, key = issue_cert(tmp_path, ca, ["localhost", "127.0.0.1"], "api")
    echo = TlsEchoServer(cert, key)
    try:
        up = setup.upstream()
        up["url"] = f"https://localhost:{echo.port}/"
        up["tls"] = {"ca_file": str(ca[2])}
        with running(setup.adapter(up)) as adapter:
            status, _, body = request(adapter, "/api/over-tls")
            assert status == 200, body
            seen = echo.seen[-1]
            headers = {k.lower(): v for k, v in seen["headers"]}
            assert headers["authorization"].startswith("Bearer ")
            assert headers["host"] == f"localhost:{echo.port}"
            assert seen["path"] == "/over-tls"
        up["tls"] = {}  # the system's CAs do not know this one: the API is not reached
        with running(setup.adapter(up)) as adapter:
            status, _, body = request(adapter, "/api/over-tls")
            assert status == 503, body
    finally:
        echo.stop()


# -- configuration ---------------------------------------------------------------------------


def run_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "adapter.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "podkit.images.auth_adapter", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            "listen: 0.0.0.0:8081\nupstreams: []\n",
            "listen",
            "not on the pod's localhost",
        ),
        ("upstreams: []\n", "upstreams", "at least one upstream"),
        (
            "upstreams:\n- name: a\n  url: ftp://x\n  oauth2: {token_url: http://i/t, client_id: c,"
            " client_secret_env: S}\n",
            "upstreams[0].url",
            "http:// or https://",
        ),
        (
            "upstreams:\n- name: a\n  url: https://user:hunter2@api/\n  oauth2: {token_url: "
            "http://i/t, client_id: c, client_secret_env: S}\n",
            "upstreams[0].url",
            "credentials in the URL are not allowed",
        ),
        (
            "upstreams:\n- name: a\n  url: https://api/\n  oauth2: {token_url: http://i/t, "
            "client_id: c}\n",
            "upstreams[0].oauth2",
            "client_secret_file",
        ),
    ],
)
def test_a_bad_config_exits_2_naming_the_field(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    done = run_config(tmp_path, text)
    assert done.returncode == 2, done
    assert field in done.stderr and reason in done.stderr, done.stderr
    assert "hunter2" not in done.stderr
    assert re.search(r"adapter\.yaml", done.stderr)


def test_the_listen_address_is_refused_before_anything_starts(tmp_path: Path) -> None:
    port = free_port()
    done = run_config(
        tmp_path,
        f"listen: 0.0.0.0:{port}\nupstreams:\n- name: a\n  url: https://api/\n  oauth2: "
        "{token_url: http://i/t, client_id: c, client_secret_env: S}\n",
    )
    assert done.returncode == 2
    assert done.stdout == ""  # nothing started, nothing logged
