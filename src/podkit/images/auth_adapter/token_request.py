"""Token requests and answers, without I/O: what to POST for each grant and client
authentication method, and what the token endpoint's answer means.

Grants: client_credentials (RFC 6749 4.4), refresh_token (RFC 6749 6), token exchange (RFC 8693).
Client authentication: client_secret_basic and client_secret_post (RFC 6749 2.3.1),
private_key_jwt (RFC 7523 2.2 / OpenID Connect Core 9), tls_client_auth (RFC 8705 2.1: the
certificate goes in the TLS handshake, only client_id in the body) and none (public client).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

from podkit.common.retry_after import parse_retry_after
from podkit.images.auth_adapter.secrets import Secret, scrub

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_TYPE_URN = "urn:ietf:params:oauth:token-type:"
AuthMethod = Literal[
    "client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth", "none"
]

MAX_ANSWER_BYTES = 256 * 1024  # a token answer is a few KiB; more is not a token endpoint
_DESCRIPTION_CHARS = 200  # of the server's error_description, in a NoToken reason


# -- what to send -----------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ClientAuth:
    """How the client proves who it is. `secret` for client_secret_*, `assertion` (an already
    signed JWT) for private_key_jwt."""

    method: AuthMethod
    client_id: str | None
    secret: Secret | None = None
    assertion: Secret | None = None

    def __repr__(self) -> str:
        return f"ClientAuth({self.method}, client_id={self.client_id!r})"


@dataclass(frozen=True, repr=False)
class Grant:
    """A grant's form parameters besides client authentication. Secret values (a refresh token,
    a subject token) stay Secrets until the body is encoded."""

    grant_type: str
    params: tuple[tuple[str, str | Secret], ...] = ()

    def __repr__(self) -> str:
        return f"Grant({self.grant_type}, params={[k for k, _ in self.params]})"


# Visible ASCII without spaces: what an access token may be to travel in a header (RFC 6750
# b64token is stricter; opaque tokens of some servers use other visible characters).
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _targets(
    scopes: Sequence[str], audience: Sequence[str], resource: Sequence[str]
) -> list[tuple[str, str | Secret]]:
    out: list[tuple[str, str | Secret]] = []
    if scopes:
        out.append(("scope", " ".join(scopes)))
    # RFC 8693 2.1 and RFC 8707 2: both may be given more than once.
    out += [("audience", a) for a in audience]
    out += [("resource", r) for r in resource]
    return out


def client_credentials(
    scopes: Sequence[str] = (), audience: Sequence[str] = (), resource: Sequence[str] = ()
) -> Grant:
    return Grant("client_credentials", tuple(_targets(scopes, audience, resource)))


def refresh(refresh_token: Secret, resource: Sequence[str] = ()) -> Grant:
    # No scope: RFC 6749 6 says an omitted scope means the one originally granted.
    params: list[tuple[str, str | Secret]] = [("refresh_token", refresh_token)]
    params += [("resource", r) for r in resource]
    return Grant("refresh_token", tuple(params))


def token_exchange(
    subject_token: Secret,
    subject_token_type: str,
    *,
    requested_token_type: str | None = None,
    scopes: Sequence[str] = (),
    audience: Sequence[str] = (),
    resource: Sequence[str] = (),
) -> Grant:
    params: list[tuple[str, str | Secret]] = [
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
    ]
    if requested_token_type:
        params.append(("requested_token_type", requested_token_type))
    params += _targets(scopes, audience, resource)
    return Grant(GRANT_TOKEN_EXCHANGE, tuple(params))


@dataclass(frozen=True, repr=False)
class TokenRequest:
    """One POST to the token endpoint. Its repr names the grant and method, never the body or
    the Authorization header."""

    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    grant_type: str
    auth_method: str

    def __repr__(self) -> str:
        return f"TokenRequest(POST {self.url}, {self.grant_type}, {self.auth_method})"

    def secrets(self) -> list[str]:
        """The values this request carries that must never be shown (to scrub from messages)."""
        out = []
        for key, value in self.headers:
            if key.lower() == "authorization":
                out += [value, value.partition(" ")[2]]  # "Basic <credentials>", and those alone
        for key, value in parse_qsl(self.body.decode("ascii")):
            if key in ("client_secret", "client_assertion", "refresh_token", "subject_token"):
                out.append(value)
        return out


def basic_credentials(client_id: str, secret: str) -> str:
    """The `Authorization: Basic` value of RFC 6749 2.3.1: client_id and secret are each
    form-urlencoded BEFORE base64, so a `:` in either cannot be mistaken for the separator.

    Spaces are written %20, not form encoding's `+`: servers decode this header with either
    form decoding or plain percent-decoding (authlib's does the latter, which would leave a `+`
    as a plus); %20 is a space to both, and every other byte is percent-encoded the same way."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


def build(url: str, grant: Grant, auth: ClientAuth) -> TokenRequest:
    """The POST for `grant` authenticated with `auth` (RFC 6749 4.4.2, 6; RFC 8693 2.1)."""
    headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", "application/json"),
    ]
    form: list[tuple[str, str]] = [("grant_type", grant.grant_type)]
    form += [(k, v.reveal() if isinstance(v, Secret) else v) for k, v in grant.params]
    method = auth.method
    if method == "client_secret_basic":
        if not auth.client_id or auth.secret is None:
            raise ValueError("client_secret_basic needs client_id and a secret")
        headers.append(("Authorization", basic_credentials(auth.client_id, auth.secret.reveal())))
    elif method == "client_secret_post":
        if not auth.client_id or auth.secret is None:
            raise ValueError("client_secret_post needs client_id and a secret")
        form += [("client_id", auth.client_id), ("client_secret", auth.secret.reveal())]
    elif method == "private_key_jwt":
        if auth.assertion is None:
            raise ValueError("private_key_jwt needs a signed assertion")
        # client_id is optional here (RFC 7523 3.1: the assertion's sub names the client) but
        # some servers look the client up by it first.
        if auth.client_id:
            form.append(("client_id", auth.client_id))
        form += [
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", auth.assertion.reveal()),
        ]
    elif method in ("tls_client_auth", "none"):
        # RFC 8705 2.1 / RFC 6749 2.1: the client is named in the body; the proof, if any, is
        # the certificate presented in the TLS handshake.
        if auth.client_id:
            form.append(("client_id", auth.client_id))
    else:  # pragma: no cover - AuthMethod is a closed set
        raise ValueError(f"unknown client authentication method {method!r}")
    return TokenRequest(
        url=url,
        headers=tuple(headers),
        body=urlencode(form).encode("ascii"),
        grant_type=grant.grant_type,
        auth_method=method,
    )


# -- private_key_jwt --------------------------------------------------------------------------

KEY_ALGS = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA", "Ed25519"),
}
_EC_DEFAULT_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private key loaded for private_key_jwt: the joserfc key, its alg and optional kid."""

    key: Any
    alg: str
    kid: str | None

    def __repr__(self) -> str:
        return f"SigningKey({self.alg}, kid={self.kid!r})"


def load_signing_key(pem: bytes, alg: str | None, kid: str | None, where: str) -> SigningKey:
    """Parse a PEM private key (PKCS#8 or traditional; RSA, EC or Ed25519). `alg` None picks the
    key's usual one (RS256, ES256/384/512 by curve, EdDSA). ValueError names `where`, never
    quotes the content."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from joserfc.jwk import import_key

    try:
        native = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # The library's message never contains key material, but keep ours to the point.
        why = "encrypted keys are not supported" if "password" in str(exc).lower() else ""
        raise ValueError(f"{where}: not a PEM private key{': ' + why if why else ''}") from None
    key_type: Literal["RSA", "EC", "OKP"]
    if isinstance(native, rsa.RSAPrivateKey):
        key_type, default_alg = "RSA", "RS256"
    elif isinstance(native, ec.EllipticCurvePrivateKey):
        key_type = "EC"
        default_alg = _EC_DEFAULT_ALG.get(native.curve.name, "")
        if not default_alg:
            raise ValueError(f"{where}: EC curve {native.curve.name} is not supported")
    elif isinstance(native, ed25519.Ed25519PrivateKey):
        key_type, default_alg = "OKP", "EdDSA"
    else:
        raise ValueError(f"{where}: {type(native).__name__} keys are not supported")
    chosen = alg or default_alg
    if chosen not in KEY_ALGS[key_type]:
        raise ValueError(f"{where}: alg {chosen} does not fit a {key_type} key")
    if key_type == "EC" and chosen != default_alg:
        raise ValueError(f"{where}: alg {chosen} does not fit curve {native.curve.name}")  # type: ignore[union-attr]
    return SigningKey(import_key(pem, key_type), chosen, kid)


def sign_assertion(
    key: SigningKey,
    client_id: str,
    audience: str,
    *,
    now: float,
    lifetime: float,
    jti: str,
) -> Secret:
    """The RFC 7523 client assertion: iss = sub = client_id, aud = the token endpoint, a unique
    jti (servers refuse a replayed one), iat, and an exp `lifetime` seconds ahead."""
    from authlib.oauth2.rfc7523 import private_key_jwt_sign

    header = {"alg": key.alg}
    if key.kid:
        header["kid"] = key.kid
    issued = int(now)
    signed = private_key_jwt_sign(
        key.key,
        client_id,
        audience,
        alg=key.alg,
        claims={"jti": jti},
        header=header,
        issued_at=issued,
        expires_at=issued + max(1, int(lifetime)),
    )
    return Secret(signed if isinstance(signed, str) else signed.decode("ascii"))


# -- what came back ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class TokenAnswer:
    """A successful token answer (RFC 6749 5.1, RFC 8693 2.2.1)."""

    access_token: str
    token_type: str
    expires_in: float | None
    scope: str | None
    refresh_token: str | None

    def __repr__(self) -> str:
        return (
            f"TokenAnswer({self.token_type}, expires_in={self.expires_in}, scope={self.scope!r}, "
            f"refresh_token={'yes' if self.refresh_token else 'no'})"
        )


Kind = Literal[
    "refused",  # a 4xx with an RFC 6749 5.2 error: bad credentials, grant, scope...
    "server_error",  # 5xx, 3xx, or an answer that is not an OAuth2 one
    "bad_answer",  # 200 but unusable (no access_token, unsupported token_type)
    "timeout",
    "unreachable",  # connection refused, DNS, reset
    "tls_error",
    "credentials",  # our own secret, key or token file could not be read
]


class TokenEndpointError(Exception):
    """Why no token came back. `reason` is for people (a NoToken reason, a log line) and holds no
    secret; `kind` is for metrics; `error` is the RFC 6749 5.2 code when the server gave one."""

    def __init__(
        self,
        kind: Kind,
        reason: str,
        *,
        error: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.error = error
        self.retry_after = retry_after


def _printable(text: str, limit: int) -> str:
    # A server-chosen string goes into logs and JSON error bodies: one line, bounded.
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _expires_in(value: Any) -> float | None:
    # Some servers send it as a string ("3600"); anything unusable counts as absent.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    return None


def _jwt_lifetime(access_token: str, now_epoch: float) -> float | None:
    """Seconds left before a JWT access token's own `exp` (RFC 9068), None when the token is not
    a readable JWT with one. The signature is not checked, nor need be: the value only says when
    to fetch the next token, never whether the API should accept this one."""
    parts = access_token.split(".")
    if len(parts) != 3:  # not a JWS (opaque, or an encrypted JWT we cannot read)
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # bad base64 (binascii.Error), bad UTF-8 or bad JSON
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return max(0.0, exp - now_epoch)


def parse_answer(
    status: int,
    content_type: str,
    body: bytes,
    *,
    retry_after: str | None = None,
    secrets: Iterable[str | Secret | None] = (),
    now_epoch: float | None = None,
) -> TokenAnswer:
    """The token in a token endpoint's answer, or TokenEndpointError saying why there is none.
    `secrets` are scrubbed from anything quoted from the answer (a server may echo them).
    Without expires_in, a JWT access token's `exp` gives its lifetime (from `now_epoch`, the
    wall clock by default)."""
    secrets = list(secrets)
    doc: Any = None
    if "json" in content_type.lower() or body[:1] in (b"{", b"["):
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]:
        error = _printable(scrub(doc["error"], secrets), 60)
        description = doc.get("error_description")
        reason = f"token endpoint refused the request: {error}"
        if isinstance(description, str) and description.strip():
            reason += f" ({_printable(scrub(description, secrets), _DESCRIPTION_CHARS)})"
        reason += f", HTTP {status}"
        kind: Kind = "refused" if 400 <= status < 500 else "server_error"
        raise TokenEndpointError(
            kind, reason, error=error, retry_after=parse_retry_after(retry_after)
        )
    if status != 200:
        if 300 <= status < 400:
            reason = f"token endpoint answered HTTP {status} (a redirect; not followed)"
        else:
            shown = content_type.split(";")[0].strip() or "no content type"
            reason = f"token endpoint answered HTTP {status} ({shown}, not an OAuth2 error)"
        raise TokenEndpointError(
            "refused" if 400 <= status < 500 and status not in (408, 429) else "server_error",
            reason,
            retry_after=parse_retry_after(retry_after),
        )
    if not isinstance(doc, dict):
        raise TokenEndpointError("bad_answer", "token endpoint answered 200 without a JSON object")
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenEndpointError("bad_answer", "token endpoint answered 200 without access_token")
    if not _HEADER_SAFE.fullmatch(access_token):
        # It goes into an Authorization field: a space, CR or LF would change the request.
        raise TokenEndpointError(
            "bad_answer", "token endpoint issued an access_token a header cannot carry"
        )
    token_type = doc.get("token_type")
    # RFC 6749 requires token_type; a few servers leave it out and mean Bearer.
    if token_type is None:
        token_type = "Bearer"
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = _printable(str(token_type), 40)
        raise TokenEndpointError(
            "bad_answer", f"token endpoint issued a token_type {shown!r} token; only Bearer is used"
        )
    scope = doc.get("scope")
    refresh_token = doc.get("refresh_token")
    expires_in = _expires_in(doc.get("expires_in"))
    if expires_in is None:
        expires_in = _jwt_lifetime(access_token, time.time() if now_epoch is None else now_epoch)
    return TokenAnswer(
        access_token=access_token,
        token_type="Bearer",
        expires_in=expires_in,
        scope=scope if isinstance(scope, str) else None,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
    )
