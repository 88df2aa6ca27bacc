"""One upstream's `oauth2:` block: how the auth-adapter gets tokens for it.

    oauth2:
      token_url: https://idp.example.com/oauth2/token
      grant_type: client_credentials          # | refresh_token | token_exchange
      client_id: my-app
      client_secret_file: /secrets/oauth/client_secret   # or client_secret_env: CLIENT_SECRET
      auth_method: client_secret_basic        # | client_secret_post | private_key_jwt
                                              # | tls_client_auth | none
      scopes: [read, write]
      audience: https://api.example.com       # one or a list (RFC 8693 audience)
      resource: [https://api.example.com/]    # RFC 8707 resource indicators
      refresh: {margin: 60, fraction: null, default_expires_in: 300}
      backoff: {initial: 1, max: 60}
      timeout: 10
      tls: {ca_file: /etc/idp-ca.pem, cert_file: /certs/tls.crt, key_file: /certs/tls.key}

private_key_jwt: `private_key_file` (PEM; RSA, EC or Ed25519), optional `key_id` (the JWT `kid`)
and `alg` (default from the key: RS256, ES256/384/512 by curve, EdDSA).
token_exchange (RFC 8693): `subject_token_file` (read again when it changes: a projected service
account token), `subject_token_type` (default `urn:ietf:params:oauth:token-type:jwt`, or a short
name: jwt, access_token, id_token, refresh_token, saml1, saml2).
refresh_token as the grant: `refresh_token_file` holds the initial refresh token.

No secret is ever written in this file: secrets come from files or environment variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from podkit.common.config_section import Section, check_http_url
from podkit.images.auth_adapter.token_request import (
    KEY_ALGS,
    TOKEN_TYPE_URN,
    AuthMethod,
)

GrantType = Literal["client_credentials", "refresh_token", "token_exchange"]
# RFC 8693 3. A token file from another issuer (a Kubernetes projected service account token,
# an OIDC ID token) is a JWT; `access_token` would claim the token endpoint itself issued it.
TOKEN_TYPES = ("jwt", "access_token", "id_token", "refresh_token", "saml1", "saml2")
DEFAULT_SUBJECT_TOKEN_TYPE = TOKEN_TYPE_URN + "jwt"
ALGS = tuple(a for algs in KEY_ALGS.values() for a in algs)
USES_SECRET = ("client_secret_basic", "client_secret_post")


def _token_type(value: Any) -> Any:
    if isinstance(value, str) and value in TOKEN_TYPES:
        return TOKEN_TYPE_URN + value
    return value


def _str_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


TokenTypeUri = Annotated[str, BeforeValidator(_token_type)]
StrList = Annotated[list[str], BeforeValidator(_str_or_list)]


class RefreshConfig(Section):
    margin: float = Field(
        default=60.0,
        ge=0,
        description="seconds before expiry to get the next token (at most half the lifetime)",
    )
    fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="also refresh once this share of the lifetime has passed; the earlier wins",
    )
    default_expires_in: float = Field(
        default=300.0,
        gt=0,
        description="seconds a token is trusted when the answer has no expires_in and the "
        "access token is not a JWT with an exp claim",
    )


class BackoffConfig(Section):
    """Waits between failed token requests: doubling from `initial` to `max`, with jitter."""

    initial: float = Field(default=1.0, gt=0, description="seconds")
    max: float = Field(default=60.0, gt=0, description="seconds")

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) may not be larger than max ({self.max})")
        return self


class TlsConfig(Section):
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle trusted instead of the system's"
    )
    cert_file: Path | None = Field(default=None, description="PEM client certificate (mTLS)")
    key_file: Path | None = Field(default=None, description="its key; default: in cert_file")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file: needs cert_file")
        return self


class OAuth2Config(Section):
    token_url: str
    grant_type: GrantType = "client_credentials"
    client_id: str | None = None
    client_secret_file: Path | None = None
    client_secret_env: str | None = None
    auth_method: AuthMethod = "client_secret_basic"
    private_key_file: Path | None = None
    key_id: str | None = None
    alg: Literal[ALGS] | None = None  # type: ignore[valid-type]
    assertion_lifetime: float = Field(
        default=60.0, gt=0, le=3600, description="seconds until a client assertion's exp"
    )
    assertion_audience: str | None = Field(
        default=None, description="the assertion's aud; default: token_url (RFC 7523 3)"
    )
    scopes: list[str] = Field(default_factory=list)
    audience: StrList = Field(default_factory=list)
    resource: StrList = Field(default_factory=list)
    subject_token_file: Path | None = None
    subject_token_type: TokenTypeUri = DEFAULT_SUBJECT_TOKEN_TYPE
    requested_token_type: TokenTypeUri | None = None
    refresh_token_file: Path | None = None
    use_refresh_token: bool = Field(
        default=True,
        description="refresh with the refresh_token the server returns (falling back to the "
        "grant when it is refused)",
    )
    refresh: RefreshConfig = Field(default_factory=RefreshConfig.model_construct)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig.model_construct)
    timeout: float = Field(default=10.0, gt=0, description="seconds for one token request")
    tls: TlsConfig | None = None

    @field_validator("token_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_http_url(value, instead="client_secret_file")

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            # RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            bad = [c for c in scope if not (0x21 <= ord(c) <= 0x7E) or c in '"\\']
            if not scope or bad:
                raise ValueError(
                    f"invalid scope {scope!r}: one scope per item, printable ASCII without "
                    'spaces, " or \\'
                )
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> OAuth2Config:
        method = self.auth_method
        has_secret = self.client_secret_file is not None or self.client_secret_env is not None
        if self.client_secret_file is not None and self.client_secret_env is not None:
            raise ValueError("client_secret_file, client_secret_env: set one, not both")
        if method != "none" and not self.client_id:
            raise ValueError(f"client_id: required for auth_method {method}")
        if method in USES_SECRET and not has_secret:
            raise ValueError(
                f"client_secret_file: required for auth_method {method} (or client_secret_env)"
            )
        if method not in USES_SECRET and has_secret:
            raise ValueError(
                f"client_secret_file/client_secret_env: not used by auth_method {method}"
            )
        if method == "private_key_jwt":
            if self.private_key_file is None:
                raise ValueError("private_key_file: required for auth_method private_key_jwt")
        elif self.private_key_file is not None or self.key_id is not None or self.alg:
            raise ValueError(f"private_key_file/key_id/alg: not used by auth_method {method}")
        scheme = urlsplit(self.token_url).scheme
        if method == "tls_client_auth" and (self.tls is None or self.tls.cert_file is None):
            raise ValueError("tls.cert_file: required for auth_method tls_client_auth")
        if self.tls is not None and scheme != "https":
            raise ValueError("tls: needs an https:// token_url")
        if method == "none" and self.grant_type == "client_credentials":
            # RFC 6749 4.4: only confidential clients may use client_credentials.
            raise ValueError("auth_method: none cannot be used with grant_type client_credentials")
        if self.grant_type == "token_exchange":
            if self.subject_token_file is None:
                raise ValueError("subject_token_file: required for grant_type token_exchange")
        elif self.subject_token_file is not None:
            raise ValueError(f"subject_token_file: not used by grant_type {self.grant_type}")
        if self.grant_type == "refresh_token":
            if self.refresh_token_file is None:
                raise ValueError("refresh_token_file: required for grant_type refresh_token")
        elif self.refresh_token_file is not None:
            raise ValueError(f"refresh_token_file: not used by grant_type {self.grant_type}")
        return self

    def cache_key(self) -> tuple[Any, ...]:
        """Upstreams with equal keys share one token cache: the token endpoint, the client, and
        what the token is for (scopes, audience, resource, the grant and its subject)."""
        return (
            self.token_url,
            self.client_id,
            self.auth_method,
            self.grant_type,
            tuple(sorted(self.scopes)),
            tuple(self.audience),
            tuple(self.resource),
            str(self.subject_token_file or ""),
            str(self.refresh_token_file or ""),
        )
