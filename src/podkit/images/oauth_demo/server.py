"""oauth-demo's server: authlib's AuthorizationServer core (client_credentials, one client,
client_secret_basic or client_secret_post, opaque tokens) and the API its tokens open, behind
one request handler for podkit's HttpServer. A stand-in for the examples, not for deployment
(see __main__.py)."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import orjson
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientMixin,
    OAuth2Error,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import (
    BearerTokenGenerator,
    BearerTokenValidator,
    InvalidTokenError,
)

from podkit.common.clock import rfc3339
from podkit.common.httpserver import Request, Response

log = logging.getLogger("oauth-demo")
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
REALM = 'Bearer realm="oauth-demo"'


class Headers(dict[str, str]):
    """The server's lower-cased headers, looked up case-insensitively as authlib does."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


class Client(ClientMixin):
    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id, self._secret = client_id, secret

    def get_client_id(self) -> str:
        return self.client_id

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self._secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class Token(TokenMixin):
    def __init__(self, client_id: str, scope: str, lifetime: float) -> None:
        self.client_id, self.scope = client_id, scope
        self.expires_at = time.monotonic() + lifetime

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.monotonic() >= self.expires_at

    def is_revoked(self) -> bool:
        return False


class TokenRequest(OAuth2Request):
    def __init__(self, uri: str, headers: Headers, body: bytes) -> None:
        super().__init__("POST", uri, headers=headers)
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        self.payload = BasicOAuth2Payload({k: v[0] for k, v in form.items()})

    @property
    def form(self) -> dict[str, str]:  # type: ignore[override]
        return self.payload.data  # type: ignore[no-any-return]

    @property
    def args(self) -> dict[str, str]:
        return {}


class Grant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


class Validator(BearerTokenValidator):
    def __init__(self, tokens: dict[str, Token]) -> None:
        super().__init__(realm="oauth-demo")
        self.tokens = tokens

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.tokens.get(token_string)


class Demo(AuthorizationServer):
    """authlib's framework-independent core, fed the HTTP server's requests."""

    def __init__(self, client: Client, lifetime: float, token_url: str) -> None:
        super().__init__()
        self.client, self.lifetime, self.token_url = client, lifetime, token_url
        self.tokens: dict[str, Token] = {}
        new_token = BearerTokenGenerator(lambda **_: secrets.token_urlsafe(32), None, int(lifetime))
        self.register_token_generator("default", new_token)
        self.register_grant(Grant)
        self.protector = ResourceProtector()
        self.protector.register_token_validator(Validator(self.tokens))

    def query_client(self, client_id: str) -> Client | None:
        return self.client if client_id == self.client.client_id else None

    def save_token(self, token: dict[str, Any], request: TokenRequest) -> None:
        now = time.monotonic()
        for expired in [k for k, t in self.tokens.items() if t.expires_at <= now]:
            del self.tokens[expired]
        client_id = request.client.client_id
        self.tokens[token["access_token"]] = Token(client_id, token.get("scope", ""), self.lifetime)
        extra = {"client_id": client_id, "auth_method": request.auth_method}
        log.info("token issued", extra={**extra, "expires_in": token["expires_in"]})

    def create_oauth2_request(self, request: TokenRequest) -> TokenRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    async def handle(self, request: Request) -> Response:
        request.headers = headers = Headers(request.headers)
        if request.path == "/healthz":
            return _json(200, {"status": "ok"})
        if request.path == "/token":
            if request.method != "POST":
                return _json(405, {"error": "method_not_allowed"}, {"Allow": "POST"})
            try:
                req = TokenRequest(self.token_url, headers, request.body)
                status, body, out = self.create_token_response(req)
            except OAuth2Error as exc:
                status, body, out = exc()
            if status != 200:
                log.info("token refused", extra={"status": status, "error": body.get("error")})
            return _json(status, body, dict(out))
        if request.method not in ("GET", "POST", "HEAD"):
            return _json(405, {"error": "method_not_allowed"}, {"Allow": "GET, POST"})
        event: dict[str, Any] = {"method": request.method, "path": request.target}
        try:
            token: Token = self.protector.validate_request(None, request)
        except InvalidTokenError as exc:  # unknown or expired
            log.info("api", extra={**event, "status": 401, "error": exc.error})
            return _json(401, {"error": exc.error}, dict(exc.get_headers()))
        except OAuth2Error:  # no Bearer token at all: no error code (RFC 6750 3.1)
            log.info("api", extra={**event, "status": 401, "error": "no bearer token"})
            return _json(401, {"error": "unauthorized"}, {"WWW-Authenticate": REALM})
        log.info(
            "api", extra={**event, "status": 200, "scheme": "Bearer", "client_id": token.client_id}
        )
        return _json(200, {"client_id": token.client_id, "path": request.target, "time": rfc3339()})


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    extra = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
    return Response(status, orjson.dumps(body), "application/json", extra)
