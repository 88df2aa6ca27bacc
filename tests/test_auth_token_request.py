"""The auth-adapter's pure pieces besides the cache: token requests and answers, the oauth2
config block, and secrets from files (with Kubernetes' symlink swap) or env."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import pytest
import yaml
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from joserfc import jwt
from pydantic import Field

from oauth_harness import SecretVolume, client_key
from podkit.common.config import ConfigError, load
from podkit.common.config_section import Section
from podkit.images.auth_adapter import token_request as tr
from podkit.images.auth_adapter.oauth_config import OAuth2Config
from podkit.images.auth_adapter.secrets import Secret, SecretError, SecretSource, scrub

NASTY = 'p:a+s s%20w/ö€\\"=&?#~'  # every character that breaks a naive Basic header


# -- client authentication --------------------------------------------------------------------


def test_basic_credentials_match_rfc6749_example() -> None:
    # RFC 6749 2.3.1 / 4.4.2's example request.
    assert tr.basic_credentials("s6BhdRkqt3", "gX1fBat3bV") == "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW"


@pytest.mark.parametrize("client_id", ["plain-id", "id:with colon+plus"])
def test_basic_credentials_are_form_urlencoded_before_base64(client_id: str) -> None:
    header = tr.basic_credentials(client_id, NASTY)
    raw = base64.b64decode(header.removeprefix("Basic ")).decode("ascii")
    # The only unencoded ':' is the separator, and the server gets the exact values back both
    # with authlib's decoder and with a strict form decoder.
    assert raw.count(":") == 1
    assert extract_basic_authorization({"Authorization": header}) == (client_id, NASTY)
    user, _, password = raw.partition(":")
    assert (unquote_plus(user), unquote_plus(password)) == (client_id, NASTY)


def test_client_secret_post_puts_credentials_in_the_form_not_a_header() -> None:
    grant = tr.client_credentials(["read", "write"], ["https://api"], ["https://api/v1"])
    req = tr.build(
        "https://idp/token", grant, tr.ClientAuth("client_secret_post", "app", Secret(NASTY))
    )
    form = parse_qs(req.body.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "scope": ["read write"],
        "audience": ["https://api"],
        "resource": ["https://api/v1"],
        "client_id": ["app"],
        "client_secret": [NASTY],
    }
    assert "authorization" not in {k.lower() for k, _ in req.headers}
    assert dict(req.headers)["Content-Type"] == "application/x-www-form-urlencoded"


def test_tls_client_auth_and_none_send_only_the_client_id() -> None:
    for method in ("tls_client_auth", "none"):
        req = tr.build("https://idp/token", tr.client_credentials(), tr.ClientAuth(method, "app"))  # type: ignore[arg-type]
        assert parse_qs(req.body.decode()) == {
            "grant_type": ["client_credentials"],
            "client_id": ["app"],
        }


def test_token_exchange_request_carries_subject_token_and_type() -> None:
    grant = tr.token_exchange(
        Secret("eyJ.subject.jwt"),
        "urn:ietf:params:oauth:token-type:jwt",
        requested_token_type="urn:ietf:params:oauth:token-type:access_token",
        audience=["a1", "a2"],
    )
    req = tr.build("https://idp/token", grant, tr.ClientAuth("none", "app"))
    form = parse_qs(req.body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    assert form["subject_token"] == ["eyJ.subject.jwt"]
    assert form["subject_token_type"] == ["urn:ietf:params:oauth:token-type:jwt"]
    assert form["audience"] == ["a1", "a2"]
    assert "eyJ.subject.jwt" not in repr(req) + repr(grant)


@pytest.mark.parametrize(("kind", "alg"), [("rsa", "RS256"), ("ec", "ES256")])
def test_private_key_jwt_assertion_claims(tmp_path: Path, kind: str, alg: str) -> None:
    pem_path, public = client_key(tmp_path, kind)
    key = tr.load_signing_key(pem_path.read_bytes(), None, "key-1", "private_key_jwt")
    assert key.alg == alg
    a1 = tr.sign_assertion(
        key, "app", "https://idp/token", now=1_800_000_000, lifetime=60, jti="j1"
    )
    a2 = tr.sign_assertion(
        key, "app", "https://idp/token", now=1_800_000_000, lifetime=60, jti="j2"
    )
    decoded = jwt.decode(a1.reveal(), public, algorithms=[alg])
    assert decoded.header["alg"] == alg and decoded.header["kid"] == "key-1"
    c = decoded.claims
    assert c["iss"] == c["sub"] == "app"
    assert c["aud"] == "https://idp/token"
    assert c["jti"] == "j1"
    assert c["exp"] - c["iat"] == 60 and c["iat"] == 1_800_000_000
    assert jwt.decode(a2.reveal(), public, algorithms=[alg]).claims["jti"] == "j2"
    req = tr.build(
        "https://idp/token",
        tr.client_credentials(),
        tr.ClientAuth("private_key_jwt", "app", assertion=a1),
    )
    form = parse_qs(req.body.decode())
    assert form["client_assertion_type"] == [tr.ASSERTION_TYPE]
    assert form["client_assertion"] == [a1.reveal()]
    assert a1.reveal() not in repr(req) + repr(a1) + repr(key)


def test_signing_key_errors_name_the_file_not_the_content(tmp_path: Path) -> None:
    pem_path, _ = client_key(tmp_path, "ec")
    with pytest.raises(ValueError, match=r"alg RS256 does not fit a EC key"):
        tr.load_signing_key(pem_path.read_bytes(), "RS256", None, "private_key_file /k.pem")
    garbage = (
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ValueError) as info:
        tr.load_signing_key(garbage, None, None, "private_key_file /k.pem")
    assert "private_key_file /k.pem: not a PEM private key" in str(info.value)
    assert "c2VjcmV0" not in str(info.value)


def test_request_repr_never_shows_credentials() -> None:
    req = tr.build(
        "https://idp/token",
        tr.refresh(Secret("rt-very-secret")),
        tr.ClientAuth("client_secret_basic", "app", Secret("client-very-secret")),
    )
    text = repr(req)
    assert "very-secret" not in text and "Basic" not in text
    assert set(req.secrets()) >= {
        "rt-very-secret",
        tr.basic_credentials("app", "client-very-secret"),
    }


# -- answers ----------------------------------------------------------------------------------


def answer(
    status: int, body: object, ctype: str = "application/json", **kw: object
) -> tr.TokenAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return tr.parse_answer(status, ctype, raw, **kw)  # type: ignore[arg-type]


def test_a_token_answer() -> None:
    a = answer(
        200,
        {
            "access_token": "AT",
            "token_type": "bearer",
            "expires_in": "3600",
            "scope": "read",
            "refresh_token": "RT",
        },
    )
    assert (a.access_token, a.token_type, a.expires_in, a.scope, a.refresh_token) == (
        "AT",
        "Bearer",
        3600.0,
        "read",
        "RT",
    )
    assert "AT" not in repr(a) and "RT" not in repr(a)
    assert answer(200, {"access_token": "AT"}).token_type == "Bearer"  # token_type left out
    assert answer(200, {"access_token": "AT", "expires_in": -5}).expires_in is None


def _jws(payload: bytes) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return ".".join((b64(b'{"alg":"ES256"}'), b64(payload), b64(b"signature")))


def test_without_expires_in_a_jwt_access_tokens_exp_gives_the_lifetime() -> None:
    now = 1_800_000_000.0
    jwt = _jws(json.dumps({"sub": "app", "exp": int(now) + 600}).encode())
    assert answer(200, {"access_token": jwt}, now_epoch=now).expires_in == 600.0
    # expires_in, when given, is what the server says: it wins over the token's own claim
    assert answer(200, {"access_token": jwt, "expires_in": 60}, now_epoch=now).expires_in == 60.0
    # already expired by our clock: no lifetime left (the cache then keeps it 1 s at least)
    assert answer(200, {"access_token": jwt}, now_epoch=now + 700).expires_in == 0.0
    for unreadable in (
        "at-opaque",  # not a JWT
        _jws(json.dumps({"sub": "app"}).encode()),  # no exp
        _jws(json.dumps({"exp": "soon"}).encode()),  # exp not a number
        _jws(json.dumps({"exp": True}).encode()),
        _jws(b"not json"),
        _jws(json.dumps([1, 2]).encode()),
        "a.%%%.c",  # not base64url
        "a.b.c.d.e",  # an encrypted JWT (JWE): nothing to read
    ):
        assert answer(200, {"access_token": unreadable}, now_epoch=now).expires_in is None


def test_oauth_error_answer_becomes_the_reason() -> None:
    with pytest.raises(tr.TokenEndpointError) as info:
        answer(
            401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        )
    exc = info.value
    assert exc.kind == "refused" and exc.error == "invalid_client"
    assert exc.reason == (
        "token endpoint refused the request: invalid_client (Client authentication failed), "
        "HTTP 401"
    )


def test_an_error_quoting_the_credentials_is_scrubbed() -> None:
    with pytest.raises(tr.TokenEndpointError) as info:
        answer(
            400,
            {
                "error": "invalid_grant",
                "error_description": f"bad refresh token rt-SECRET-1 for {NASTY}",
            },
            secrets=["rt-SECRET-1", Secret(NASTY)],
        )
    assert "rt-SECRET-1" not in info.value.reason and NASTY not in info.value.reason
    assert "[REDACTED]" in info.value.reason


def test_non_oauth_failures() -> None:
    with pytest.raises(tr.TokenEndpointError) as info:
        answer(503, b"<html>down</html>", "text/html", retry_after="7")
    assert info.value.kind == "server_error" and info.value.retry_after == 7.0
    assert info.value.reason == "token endpoint answered HTTP 503 (text/html, not an OAuth2 error)"
    with pytest.raises(tr.TokenEndpointError, match="redirect; not followed"):
        answer(302, b"", "text/html")
    with pytest.raises(tr.TokenEndpointError, match="without a JSON object") as info:
        answer(200, b"ok", "text/plain")
    assert info.value.kind == "bad_answer"
    with pytest.raises(tr.TokenEndpointError, match="without access_token"):
        answer(200, {"token_type": "Bearer"})
    # RFC 8693 2.2.1: N_A means the issued token is not an access token at all.
    with pytest.raises(tr.TokenEndpointError, match="token_type 'N_A'"):
        answer(200, {"access_token": "x", "token_type": "N_A"})


def test_retry_after_as_http_date() -> None:
    assert tr.parse_retry_after("Wed, 25 Nov 2026 22:15:38 GMT", now_epoch=1795644908.0) == 30.0
    assert tr.parse_retry_after("soon") is None


# -- the oauth2 config block ------------------------------------------------------------------


class Upstream(Section):
    """How the adapter's own config will hold the block: under an upstream."""

    name: str = "api"
    oauth2: OAuth2Config | None = None


class Top(Section):
    upstreams: list[Upstream] = Field(default_factory=list)


def load_block(tmp_path: Path, block: dict[str, object]) -> OAuth2Config:
    path = tmp_path / "auth-adapter.yaml"
    path.write_text(yaml.safe_dump({"upstreams": [{"name": "api", "oauth2": block}]}))
    cfg = load(Top, path, env_prefix="AUTH_ADAPTER_TEST_", environ={})
    assert cfg.upstreams[0].oauth2 is not None
    return cfg.upstreams[0].oauth2


BASE = {"token_url": "https://idp.example.com/token", "client_id": "app", "client_secret_env": "S"}


def test_config_defaults(tmp_path: Path) -> None:
    cfg = load_block(tmp_path, BASE)
    assert cfg.auth_method == "client_secret_basic" and cfg.grant_type == "client_credentials"
    assert cfg.refresh.margin == 60 and cfg.backoff.initial == 1 and cfg.timeout == 10
    ex = load_block(
        tmp_path,
        {
            "token_url": "https://idp/token",
            "grant_type": "token_exchange",
            "auth_method": "none",
            "subject_token_file": "/var/run/secrets/tokens/token",
            "audience": "https://api",
        },
    )
    assert ex.subject_token_type == "urn:ietf:params:oauth:token-type:jwt"
    assert ex.audience == ["https://api"]
    short = load_block(
        tmp_path, {**ex.model_dump(mode="json"), "subject_token_type": "access_token"}
    )
    assert short.subject_token_type == "urn:ietf:params:oauth:token-type:access_token"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"client_secret_env": None},
            "client_secret_file: required for auth_method client_secret_basic",
        ),
        ({"client_id": None}, "client_id: required for auth_method client_secret_basic"),
        (
            {"auth_method": "private_key_jwt"},
            "client_secret_file/client_secret_env: not used by auth_method private_key_jwt",
        ),
        (
            {"auth_method": "private_key_jwt", "client_secret_env": None},
            "private_key_file: required",
        ),
        ({"auth_method": "tls_client_auth", "client_secret_env": None}, "tls.cert_file: required"),
        (
            {"grant_type": "token_exchange"},
            "subject_token_file: required for grant_type token_exchange",
        ),
        ({"grant_type": "refresh_token"}, "refresh_token_file: required"),
        (
            {"token_url": "http://idp/token", "tls": {"ca_file": "/ca.pem"}},
            "tls: needs an https:// token_url",
        ),
        (
            {"token_url": "https://app:hunter2@idp/token"},
            "token_url: credentials in the URL are not allowed",
        ),
        ({"scopes": ["read write"]}, "scopes: invalid scope 'read write'"),
        (
            {"backoff": {"initial": 9, "max": 3}},
            "backoff: initial (9.0) may not be larger than max",
        ),
        (
            {"auth_method": "none", "client_secret_env": None},
            "none cannot be used with grant_type client_credentials",
        ),
        ({"alg": "HS256"}, "alg: Input should be"),
        ({"client_secret": "inline"}, "client_secret: unknown field"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    block = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        load_block(tmp_path, block)
    text = str(info.value)
    assert f"{tmp_path / 'auth-adapter.yaml'}: upstreams[0].oauth2" in text
    assert message in text, text
    assert "hunter2" not in text


# -- secrets ----------------------------------------------------------------------------------


def test_secret_holder_never_shows_its_value() -> None:
    s = Secret("hunter2-value")
    for text in (repr(s), str(s), f"{s}", format(s), repr([s]), repr({"k": s})):
        assert "hunter2" not in text
    assert s.reveal() == "hunter2-value"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert scrub("a hunter2-value b", [s, None, ""]) == "a [REDACTED] b"


def test_file_secret_follows_a_kubernetes_symlink_swap(tmp_path: Path) -> None:
    vol = SecretVolume(tmp_path / "secret", {"client_secret": "first-secret\n"})
    src = SecretSource("client_secret_file", path=vol.path("client_secret"))
    assert src.get().reveal() == "first-secret"  # the trailing newline is not part of it
    assert not src.changed()
    vol.update({"client_secret": "second secret "})  # same length class, new directory
    assert src.changed()
    assert src.get().reveal() == "second secret "  # spaces are part of a secret
    assert not src.changed()
    assert "second" not in repr(src)


def test_file_secret_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("aaaa")
    src = SecretSource("client_secret_file", path=path)
    assert src.get().reveal() == "aaaa"
    path.write_text("bbbbbb")
    assert src.changed() and src.get().reveal() == "bbbbbb"


def test_secret_errors_say_where_and_why(tmp_path: Path) -> None:
    missing = SecretSource("client_secret_file", path=tmp_path / "nope")
    with pytest.raises(
        SecretError, match=r"client_secret_file .*/nope: cannot read it: No such file"
    ):
        missing.get()
    assert not missing.changed()
    (tmp_path / "nope").write_text("now-here")
    assert missing.changed() and missing.get().reveal() == "now-here"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="the file is empty"):
        SecretSource("client_secret_file", path=empty).get()
    env = SecretSource("client_secret_env", env="MY_SECRET", environ={})
    with pytest.raises(SecretError, match="environment variable MY_SECRET"):
        env.get()
    assert (
        SecretSource("x", env="MY_SECRET", environ={"MY_SECRET": "v4lue"}).get().reveal() == "v4lue"
    )
