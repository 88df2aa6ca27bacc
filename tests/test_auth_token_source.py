"""The auth-adapter's TokenSource against a real authlib authorization server and a resource
server that checks the tokens (tests/oauth_harness.py): grants, client authentication, refresh,
single flight, outages, 401 invalidation, secret rotation, and that no secret ever shows."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from oauth_harness import OAuthServer, ResourceServer, SecretVolume, ServerTls, client_key
from podkit.common.logging import record_to_dict
from podkit.images.auth_adapter.oauth_config import OAuth2Config
from podkit.images.auth_adapter.token_metrics import TokenMetrics
from podkit.images.auth_adapter.token_source import NoToken, Token, TokenSource, TokenSources
from proxy_harness import free_port, issue_cert, make_ca

T = TypeVar("T")
NASTY = 'p:a+s s%20w/ö€\\"=&?#~'  # through client_secret_basic's form-urlencoding


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def poll(check: Callable[[], Awaitable[T]], timeout: float, interval: float = 0.02) -> T:
    """check()'s first truthy value, tried every `interval` until `timeout`; then the last."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


async def call_api(url: str, token: Token | None) -> tuple[int, dict[str, str], dict[str, Any]]:
    """GET `url` with the token: (status, headers, JSON body)."""

    def go() -> tuple[int, dict[str, str], dict[str, Any]]:
        headers = {"Authorization": token.authorization} if token else {}
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers.items()), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), json.loads(exc.read())

    return await asyncio.to_thread(go)


@pytest.fixture
def idp() -> Iterator[OAuthServer]:
    server = OAuthServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(idp: OAuthServer) -> Iterator[ResourceServer]:
    server = ResourceServer(idp)
    try:
        yield server
    finally:
        server.stop()


def secret_file(tmp_path: Path, value: str, name: str = "client_secret") -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    return path


def basic_config(idp: OAuthServer, secret: Path, **kw: Any) -> OAuth2Config:
    return OAuth2Config(token_url=idp.token_url, client_id="app", client_secret_file=secret, **kw)


# -- grants and client authentication, accepted by the real server ----------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_secret_methods_with_a_secret_full_of_special_characters(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer, method: str
) -> None:
    idp.add_client("app", secret=NASTY, auth_method=method)
    cfg = basic_config(idp, secret_file(tmp_path, NASTY), auth_method=method, scopes=["read"])

    async def main() -> None:
        source = TokenSource(cfg, name="api")
        assert not source.ready
        token = await source.token()
        assert source.ready
        status, _, body = await call_api(api.url + "/scope/read/items", token)
        assert status == 200 and body["client_id"] == "app" and body["scope"] == "read"

    run(main())
    [seen] = idp.requests()
    assert (seen.status, seen.grant_type, seen.auth_method) == (200, "client_credentials", method)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_private_key_jwt_with_unique_short_lived_assertions(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer, kind: str
) -> None:
    pem, public = client_key(tmp_path, kind)
    idp.add_client("app", auth_method="private_key_jwt", public_key=public)
    cfg = OAuth2Config(
        token_url=idp.token_url,
        client_id="app",
        auth_method="private_key_jwt",
        private_key_file=pem,
        key_id="k1",
        assertion_lifetime=30,
    )

    async def main() -> None:
        source = TokenSource(cfg)
        first = await source.token()
        source.invalidate(first)
        second = await source.token()  # a second assertion: the server refuses a replayed jti
        assert second is not first
        assert (await call_api(api.url + "/", second))[0] == 200

    run(main())
    assert [r.auth_method for r in idp.requests()] == ["private_key_jwt"] * 2
    claims = idp.assertion_claims
    assert len({c["jti"] for c in claims}) == 2
    for c in claims:
        assert c["iss"] == c["sub"] == "app"
        assert c["aud"] == idp.token_url
        assert 0 < c["exp"] - c["iat"] <= 30
        assert abs(c["iat"] - time.time()) < 60


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = make_ca(tmp_path)
    server_cert, server_key = issue_cert(tmp_path, ca, ["127.0.0.1"], "idp")
    client_cert, client_key_ = issue_cert(tmp_path, ca, ["billing-client"], "client", client=True)
    other_cert, other_key = issue_cert(tmp_path, ca, ["intruder"], "intruder", client=True)
    return {
        "ca": ca[2],
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key_,
        "other_cert": other_cert,
        "other_key": other_key,
    }


def test_tls_client_auth_over_https_with_a_configured_ca(pki: dict[str, Path]) -> None:
    idp = OAuthServer(ServerTls(pki["server_cert"], pki["server_key"], client_ca=pki["ca"]))
    try:
        idp.add_client("billing", auth_method="tls_client_auth", cert_cn="billing-client")

        def cfg(cert: str, ca: bool = True) -> OAuth2Config:
            tls: dict[str, Any] = {"cert_file": pki[f"{cert}_cert"], "key_file": pki[f"{cert}_key"]}
            if ca:
                tls["ca_file"] = pki["ca"]
            return OAuth2Config(
                token_url=idp.token_url, client_id="billing", auth_method="tls_client_auth", tls=tls
            )

        async def main() -> None:
            token = await TokenSource(cfg("client")).token()
            assert idp.lookup(token.access_token) is not None
            # Another certificate from the same CA does not name this client.
            with pytest.raises(NoToken, match=r"invalid_client.*HTTP 401"):
                await TokenSource(cfg("other")).token()
            # Without the CA the server's certificate is not trusted: a TLS failure, said so.
            with pytest.raises(NoToken, match="certificate .* was refused") as info:
                await TokenSource(cfg("client", ca=False)).token()
            assert info.value.reason.endswith("self-signed certificate in certificate chain")

        run(main())
        seen = idp.requests()
        assert [(r.status, r.auth_method, r.peer_cn) for r in seen] == [
            (200, "tls_client_auth", "billing-client"),
            (401, None, "intruder"),
        ]
        assert seen[0].form["client_id"] == ["billing"]
    finally:
        idp.stop()


def test_token_exchange_rereads_the_subject_token_file_when_kubernetes_swaps_it(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer
) -> None:
    idp.add_client("exchanger", auth_method="none")
    idp.subject_tokens = {"sa-token-v1": "system:serviceaccount:shop:web"}
    idp.allowed_targets = {"https://api.example"}
    vol = SecretVolume(tmp_path / "tokens", {"token": "sa-token-v1"})
    cfg = OAuth2Config(
        token_url=idp.token_url,
        grant_type="token_exchange",
        auth_method="none",
        client_id="exchanger",
        subject_token_file=vol.path("token"),
        audience="https://api.example",
        scopes=["read"],
    )

    async def main() -> None:
        source = TokenSource(cfg)
        first = await source.token()
        assert (await call_api(api.url + "/", first))[2]["subject"] == (
            "system:serviceaccount:shop:web"
        )
        # The kubelet rotates the projected token; the old one stops being accepted.
        idp.subject_tokens = {"sa-token-v2": "system:serviceaccount:shop:web-v2"}
        vol.update({"token": "sa-token-v2"})
        source.invalidate(first)
        second = await source.token()
        status, _, body = await call_api(api.url + "/", second)
        assert status == 200 and body["subject"] == "system:serviceaccount:shop:web-v2"
        assert body["audience"] == ["https://api.example"]

    run(main())
    seen = idp.requests()
    assert [r.one("subject_token") for r in seen] == ["sa-token-v1", "sa-token-v2"]
    assert {r.one("subject_token_type") for r in seen} == {"urn:ietf:params:oauth:token-type:jwt"}
    assert {r.grant_type for r in seen} == {"urn:ietf:params:oauth:grant-type:token-exchange"}
    assert all(r.status == 200 for r in seen)


def test_refresh_token_is_used_and_a_refused_one_falls_back_to_the_grant(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer
) -> None:
    idp.add_client("app", secret="s3cret")
    idp.refresh_tokens_for_client_credentials = True
    cfg = basic_config(idp, secret_file(tmp_path, "s3cret"))

    async def main() -> None:
        source = TokenSource(cfg)
        t1 = await source.token()
        source.invalidate(t1)
        t2 = await source.token()  # by refresh_token
        assert (await call_api(api.url + "/", t2))[0] == 200
        idp.revoke_refresh_tokens()
        source.invalidate(t2)
        t3 = await source.token()  # refresh refused: client_credentials within the same call
        assert (await call_api(api.url + "/", t3))[0] == 200

    run(main())
    seen = idp.requests()
    assert [(r.grant_type, r.status, r.error) for r in seen] == [
        ("client_credentials", 200, None),
        ("refresh_token", 200, None),
        ("refresh_token", 400, "invalid_grant"),
        ("client_credentials", 200, None),
    ]
    # The refresh used the refresh token the server returned.
    issued_rt = list(idp.refresh_tokens)
    assert seen[1].one("refresh_token") == issued_rt[0]
    assert seen[2].one("refresh_token") == issued_rt[1]  # the rotated one


def test_scopes_audience_and_resource_reach_the_server_and_bad_ones_say_why(
    tmp_path: Path, idp: OAuthServer
) -> None:
    idp.add_client("app", secret="s3cret")
    idp.allowed_targets = {"https://api.example", "https://api.example/v1"}
    api = ResourceServer(idp, required_audience="https://api.example")
    secret = secret_file(tmp_path, "s3cret")
    try:

        async def main() -> None:
            cfg = basic_config(
                idp,
                secret,
                scopes=["read", "write"],
                audience=["https://api.example"],
                resource=["https://api.example/v1"],
            )
            token = await TokenSource(cfg).token()
            assert token.scope == "read write"
            status, _, body = await call_api(api.url + "/scope/write/x", token)
            assert status == 200 and body["audience"] == ["https://api.example"]
            status, headers, _ = await call_api(api.url + "/scope/admin/x", token)
            assert status == 403
            assert headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="admin"'

            elsewhere = basic_config(idp, secret, audience=["https://elsewhere.example"])
            with pytest.raises(NoToken, match=r"refused the request: invalid_target"):
                await TokenSource(elsewhere).token()
            unknown_scope = basic_config(idp, secret, scopes=["delete"])
            with pytest.raises(NoToken, match=r"refused the request: invalid_scope"):
                await TokenSource(unknown_scope).token()

        run(main())
        form = idp.requests()[0].form
        assert form["scope"] == ["read write"]
        assert form["audience"] == ["https://api.example"]
        assert form["resource"] == ["https://api.example/v1"]
    finally:
        api.stop()


# -- the cache: expiry, refresh ahead, single flight ------------------------------------------


def test_refresh_ahead_replaces_the_token_before_it_expires(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer
) -> None:
    idp.add_client("app", secret="s3cret")
    idp.expires_in = 3  # usable 2.7 s; margin 1.5 s: refreshed 1.5 s in
    cfg = basic_config(idp, secret_file(tmp_path, "s3cret"), refresh={"margin": 1.5})
    metrics = TokenMetrics()

    async def main() -> None:
        source = TokenSource(cfg, name="api", metrics=metrics)
        await source.start()  # the background refresher, as the adapter runs it
        try:
            assert await poll(_ready(source), 5.0)
            statuses = set()
            seen_tokens = []

            async def two_tokens() -> bool:
                token = await source.token()  # never NoToken: a valid token all along
                if not seen_tokens or seen_tokens[-1] is not token:
                    seen_tokens.append(token)
                statuses.add((await call_api(api.url + "/", token))[0])
                return len(seen_tokens) >= 2

            assert await poll(two_tokens, 6.0, interval=0.05)
            assert statuses == {200}
        finally:
            await source.aclose()

    run(main())
    first, second = idp.issued()[:2]
    # The second token came ~1.5 s after the first: ahead of the first one's expiry (3 s).
    assert 1.2 <= second.issued_at - first.issued_at < 3.0
    assert metrics.fetches == {("api", "ok"): 2}
    assert metrics.refresh_lag["api"] < 1.0  # about on time


def test_without_expires_in_the_default_lifetime_applies(tmp_path: Path, idp: OAuthServer) -> None:
    idp.add_client("app", secret="s3cret")
    idp.expires_in = None
    cfg = basic_config(
        idp, secret_file(tmp_path, "s3cret"), refresh={"default_expires_in": 2, "margin": 0.5}
    )

    async def main() -> tuple[Token, Token]:
        source = TokenSource(cfg)
        first = await source.token()
        assert not first.lifetime_given and "default lifetime" in repr(first)
        assert await source.token() is first  # cached
        started = time.monotonic()
        second = await poll(_new_token(source, first), 4.0)
        assert time.monotonic() - started + 0.05 >= 1.3  # not before its refresh time (1.5 s)
        return first, second

    first, second = run(main())
    assert second is not first and idp.token_requests == 2


def test_without_expires_in_a_jwt_token_is_refreshed_before_its_own_exp(tmp_path: Path) -> None:
    """An IdP that issues JWT access tokens living ~4 s and says no expires_in: the default
    lifetime (an hour here) would use a token long after the API stops taking it."""
    idp = OAuthServer(token_format="jwt")
    api = ResourceServer(idp)
    try:
        idp.add_client("app", secret="s3cret")
        idp.expires_in = None
        idp.lifetime_when_absent = 4.0  # exp = iat + 4 (whole seconds): 3-4 s from now
        cfg = basic_config(
            idp,
            secret_file(tmp_path, "s3cret"),
            refresh={"default_expires_in": 3600, "margin": 1.5},
        )

        async def main() -> tuple[set[int], list[Token]]:
            source = TokenSource(cfg, name="api")
            await source.start()
            tokens: list[Token] = []
            statuses: set[int] = set()
            try:

                async def two_tokens() -> bool:
                    token = await source.token()
                    if not tokens or tokens[-1] is not token:
                        tokens.append(token)
                    statuses.add((await call_api(api.url + "/", token))[0])
                    return len(tokens) >= 2

                assert await poll(two_tokens, 8.0, interval=0.05)
            finally:
                await source.aclose()
            return statuses, tokens

        statuses, tokens = run(main())
        assert statuses == {200}  # never a token the API had stopped taking
        first = tokens[0]
        assert first.lifetime_given and "default lifetime" not in repr(first)
        assert first.expires_at - first.obtained_at <= 4.0
    finally:
        api.stop()
        idp.stop()


def test_200_concurrent_calls_on_a_cold_cache_make_exactly_one_token_request(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer
) -> None:
    idp.add_client("app", secret="s3cret")
    idp.delay = 0.3  # the answer takes a while, so all 200 arrive while it is pending
    metrics = TokenMetrics()
    source = TokenSource(basic_config(idp, secret_file(tmp_path, "s3cret")), metrics=metrics)

    async def main() -> list[Token]:
        tokens = await asyncio.gather(*(source.token() for _ in range(200)))
        assert metrics.cache_hits == {}  # all 200 waited for the one request
        tokens += [await source.token() for _ in range(10)]
        assert metrics.cache_hits == {"default": 10}
        return tokens

    tokens = run(main())
    assert idp.token_requests == 1
    assert len({id(t) for t in tokens}) == 1
    assert metrics.fetches == {("default", "ok"): 1}


# -- the identity provider fails --------------------------------------------------------------


def test_outage_keeps_the_valid_token_backs_off_then_fails_fast_with_the_reason(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer
) -> None:
    idp.add_client("app", secret="s3cret")
    idp.expires_in = 3  # usable 2.7 s, refresh due at 1.5 s
    cfg = basic_config(
        idp,
        secret_file(tmp_path, "s3cret"),
        refresh={"margin": 2},
        backoff={"initial": 0.2, "max": 0.4},
    )
    metrics = TokenMetrics()

    async def main() -> None:
        source = TokenSource(cfg, name="api", metrics=metrics)
        token = await source.token()
        idp.set_outage("503")
        served = failed = 0
        slowest_failure = 0.0
        reasons = set()
        deadline = token.obtained_at + 3.6
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                got = await source.token()
            except NoToken as exc:
                failed += 1
                slowest_failure = max(slowest_failure, time.monotonic() - began)
                reasons.add(exc.reason)
            else:
                assert got is token  # the still-valid token, while the refresh fails
                assert time.monotonic() < token.expires_at + 0.05
                served += 1
            await asyncio.sleep(0.01)
        assert served > 50 and failed > 20
        assert slowest_failure < 0.5  # during backoff at once; else one quick 503
        assert reasons == {"token endpoint answered HTTP 503 (text/html, not an OAuth2 error)"}
        # ~200 calls, yet the endpoint was asked only as often as the backoff allows.
        attempts = idp.token_requests - 1
        assert 3 <= attempts <= 14, attempts
        assert metrics.fetches[("api", "server_error")] == attempts

        idp.set_outage(None)
        fresh = await poll(_token_or_none(source), 3.0)
        assert fresh is not None and fresh is not token
        assert (await call_api(api.url + "/", fresh))[0] == 200

    run(main())


def test_unreachable_or_hanging_token_endpoint(tmp_path: Path, idp: OAuthServer) -> None:
    idp.add_client("app", secret="s3cret")
    secret = secret_file(tmp_path, "s3cret")
    metrics = TokenMetrics()

    async def main() -> None:
        # Nothing listens: NoToken says so, and the backoff keeps the next callers off the wire.
        refused = TokenSource(
            OAuth2Config(
                token_url=f"http://127.0.0.1:{free_port()}/token",
                client_id="app",
                client_secret_file=secret,
                backoff={"initial": 5, "max": 5},
            ),
            name="refused",
            metrics=metrics,
        )
        with pytest.raises(NoToken, match="cannot connect to token endpoint .*: Connect"):
            await refused.token()
        began = time.monotonic()
        for _ in range(100):
            with pytest.raises(NoToken, match="cannot connect") as info:
                await refused.token()
        assert time.monotonic() - began < 0.5
        assert info.value.retry_in is not None and 2.0 < info.value.retry_in <= 5.0
        assert metrics.fetches == {("refused", "unreachable"): 1}

        # Accepts, never answers: the timeout ends it, for every caller waiting on that one.
        idp.set_outage("hang")
        hanging = TokenSource(
            basic_config(idp, secret, timeout=0.3), name="hanging", metrics=metrics
        )
        began = time.monotonic()
        results = await asyncio.gather(
            *(hanging.token() for _ in range(20)), return_exceptions=True
        )
        assert time.monotonic() - began < 2.0
        assert all(isinstance(r, NoToken) for r in results)
        assert {r.reason for r in results if isinstance(r, NoToken)} == {
            f"token endpoint {idp.token_url} did not answer within 0.3 s"
        }
        assert idp.token_requests == 1
        assert metrics.fetches[("hanging", "timeout")] == 1

    run(main())


# -- 401 from the API, secret rotation --------------------------------------------------------


def test_a_burst_of_401s_for_one_token_makes_one_new_fetch(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer
) -> None:
    idp.add_client("app", secret="s3cret")
    source = TokenSource(basic_config(idp, secret_file(tmp_path, "s3cret")))

    async def request() -> int:
        """What the proxy will do: token, call, on 401 invalid_token invalidate and retry once."""
        token = await source.token()
        status, headers, _ = await call_api(api.url + "/", token)
        if status == 401 and 'error="invalid_token"' in headers.get("WWW-Authenticate", ""):
            source.invalidate(token)
            status, _, _ = await call_api(api.url + "/", await source.token())
        return status

    async def main() -> None:
        assert await request() == 200
        idp.revoke_all()
        assert await asyncio.gather(*(request() for _ in range(30))) == [200] * 30

    run(main())
    assert idp.token_requests == 2


def test_a_rotated_client_secret_is_picked_up_without_waiting_out_the_backoff(
    tmp_path: Path, idp: OAuthServer, api: ResourceServer
) -> None:
    client = idp.add_client("app", secret="old-secret-value")
    vol = SecretVolume(tmp_path / "oauth", {"client_secret": "old-secret-value"})
    cfg = OAuth2Config(
        token_url=idp.token_url,
        client_id="app",
        client_secret_file=vol.path("client_secret"),
        backoff={"initial": 30, "max": 60},
    )

    async def main() -> None:
        source = TokenSource(cfg)
        old = await source.token()
        # The IdP rotates the secret and revokes; the new secret is not mounted yet.
        client.secret = "new-secret-value"
        idp.revoke_all()
        source.invalidate(old)
        with pytest.raises(NoToken, match="invalid_client") as info:
            await source.token()
        assert info.value.retry_in is not None and info.value.retry_in > 10
        vol.update({"client_secret": "new-secret-value"})  # the kubelet's symlink swap
        fresh = await poll(_token_or_none(source), 3.0)
        assert fresh is not None
        assert (await call_api(api.url + "/", fresh))[0] == 200

    run(main())
    assert [r.status for r in idp.requests()] == [200, 401, 200]


# -- nothing secret shows anywhere ------------------------------------------------------------


def test_no_secret_in_logs_errors_reprs_or_metrics(
    tmp_path: Path, idp: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    idp.echo_credentials_in_errors = True  # a server that quotes the credentials it got
    idp.refresh_tokens_for_client_credentials = True
    basic = idp.add_client("basic", secret="basic-secret-" + NASTY)
    idp.add_client("post", secret="post-secret-Zq81", auth_method="client_secret_post")
    pem, _ = client_key(tmp_path, "ec")
    _, wrong_public = client_key(tmp_path, "rsa")
    idp.add_client("jwt", auth_method="private_key_jwt", public_key=wrong_public)
    idp.add_client("exchanger", auth_method="none")
    idp.subject_tokens = {"sa-token-good-77": "sa"}
    metrics = TokenMetrics()
    sources = TokenSources(metrics=metrics)
    texts: list[str] = []

    def cfg(client_id: str, **kw: Any) -> OAuth2Config:
        return OAuth2Config(token_url=idp.token_url, client_id=client_id, **kw)

    basic_src = sources.get(
        "basic", cfg("basic", client_secret_file=secret_file(tmp_path, basic.secret or "", "b"))
    )
    post_src = sources.get(
        "post",
        cfg(
            "post",
            auth_method="client_secret_post",
            client_secret_file=secret_file(tmp_path, "post-secret-WRONG-" + NASTY, "p"),
        ),
    )
    jwt_src = sources.get("jwt", cfg("jwt", auth_method="private_key_jwt", private_key_file=pem))
    subject = secret_file(tmp_path, "sa-token-bad-42", "subject")
    exchange_src = sources.get(
        "exchange",
        cfg(
            "exchanger",
            auth_method="none",
            grant_type="token_exchange",
            subject_token_file=subject,
        ),
    )

    async def attempt(source: TokenSource) -> Token | None:
        try:
            return await source.token()
        except NoToken as exc:
            texts.extend([str(exc), repr(exc), exc.reason])
            return None

    async def main() -> None:
        # Success; a refresh refused (the echo quotes the refresh token), the grant again; then
        # a secret the server no longer takes (the echo quotes the Basic header and the body).
        token = await attempt(basic_src)
        assert token is not None
        idp.revoke_refresh_tokens()
        basic_src.invalidate(token)
        token = await attempt(basic_src)
        assert token is not None
        texts.extend([repr(token), str(token)])
        basic.secret = "rotated-away"
        basic_src.invalidate(token)
        assert await attempt(basic_src) is None
        for source in (post_src, jwt_src, exchange_src):
            assert await attempt(source) is None  # each refused, with an echo of its secret
        for source in sources.all():
            texts.extend([repr(source), str(source), json.dumps(source.status())])
            texts.append(repr(source.config))
            texts.append(source.config.model_dump_json())

    run(main())
    registry = CollectorRegistry()
    registry.register(metrics)  # type: ignore[arg-type]
    exposition = generate_latest(registry).decode()
    texts.append(exposition)
    logged = [
        orjson.dumps(record_to_dict(r), default=str).decode() + r.getMessage()
        for r in caplog.records
        if not r.name.startswith("authlib")  # the server under test, in this process
    ]
    texts += logged

    secrets = {"basic-secret-" + NASTY, "post-secret-WRONG-" + NASTY, NASTY, "sa-token-bad-42"}
    secrets |= {quote_plus(s) for s in secrets} | {quote(s, safe="") for s in secrets}  # as sent
    secrets |= set(idp.tokens) | set(idp.refresh_tokens)
    for seen in idp.requests():
        secrets |= {v for k in ("client_assertion", "client_secret") for v in seen.form.get(k, [])}
        if "Authorization" in seen.headers:
            secrets.add(seen.headers["Authorization"])
            secrets.add(seen.headers["Authorization"].split()[1])
    secrets.add(pem.read_text().splitlines()[1])
    # Sanity: the scenario did hand out a token and a refresh token, and signed an assertion.
    assert idp.tokens and idp.refresh_tokens
    assert any("client_assertion" in seen.form for seen in idp.requests())
    everything = "\n".join(texts)
    leaked = [s for s in secrets if s in everything]
    assert leaked == []
    # ...and the messages still say what went wrong, with the echoes cut out.
    assert "invalid_client" in everything and "invalid_grant" in everything
    assert "invalid_request" in everything  # the bad subject token
    assert "[REDACTED]" in everything
    assert any('"token request failed"' in line for line in logged)
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    results = {
        (s.labels["upstream"], s.labels["result"])
        for s in families["auth_adapter_token_fetches"].samples
        if s.name.endswith("_total")
    }
    assert ("basic", "ok") in results and ("jwt", "refused") in results


# -- the pool ---------------------------------------------------------------------------------


def test_upstreams_with_the_same_client_and_audience_share_one_cache(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, "s")
    base = {"token_url": "https://idp/token", "client_id": "app", "client_secret_file": secret}
    sources = TokenSources()
    a = sources.get("a", OAuth2Config(**base, scopes=["read", "write"]))
    b = sources.get("b", OAuth2Config(**base, scopes=["write", "read"]))
    c = sources.get("c", OAuth2Config(**base, scopes=["read"]))
    assert a is b and a is not c
    with pytest.raises(ValueError, match="upstreams 'a' and 'd' use the same OAuth2 client"):
        sources.get("d", OAuth2Config(**base, scopes=["read", "write"], timeout=3))
    assert not sources.ready


# -- helpers ----------------------------------------------------------------------------------


def _ready(source: TokenSource) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return source.ready

    return check


def _token_or_none(source: TokenSource) -> Callable[[], Awaitable[Token | None]]:
    async def check() -> Token | None:
        try:
            return await source.token()
        except NoToken:
            return None

    return check


def _new_token(source: TokenSource, old: Token) -> Callable[[], Awaitable[Token | None]]:
    async def check() -> Token | None:
        token = await source.token()
        return token if token is not old else None

    return check
