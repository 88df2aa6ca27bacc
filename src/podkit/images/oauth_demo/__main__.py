"""`oauth-demo` / `python -m podkit.images.oauth_demo`: a STAND-IN for "an external API and its
identity provider", so examples/adapter-oauth2.yaml runs on one machine without one.

NOT SOMETHING TO DEPLOY: one client, tokens kept in memory, plain HTTP, no rate limits, no
persistence. It exists so the auth-adapter has a real OAuth2 server to talk to in the examples.

    POST /token     OAuth2 token endpoint (authlib's AuthorizationServer): grant_type
                    client_credentials, client_secret_basic or client_secret_post; opaque
                    bearer tokens that live --token-lifetime seconds
    GET|POST /...   the protected API (authlib's ResourceProtector + BearerTokenValidator): 200
                    {"client_id", "path", "time"} with a valid token; 401 with
                    `WWW-Authenticate: Bearer ...` (error="invalid_token" for an unknown or
                    expired token, no error code when there is none, as RFC 6750 3.1 says)
    GET /healthz    200, no token needed (for probes)

Settings (an argument wins over its environment variable):
    --listen HOST:PORT       OAUTH_DEMO_LISTEN               127.0.0.1:9400 (loopback: plain HTTP)
    --client-id ID           OAUTH_DEMO_CLIENT_ID            demo-app
    --client-secret-file F   OAUTH_DEMO_CLIENT_SECRET_FILE   (or OAUTH_DEMO_CLIENT_SECRET)
    --token-lifetime S       OAUTH_DEMO_TOKEN_LIFETIME       3600
The secret is never an argument (it would show in `ps`), and neither it nor any token is logged.
"""

from __future__ import annotations

from podkit.common import early_stop

early_stop.install()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import ipaddress  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import orjson  # noqa: E402
from authlib.oauth2.rfc6749 import (  # noqa: E402
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientMixin,
    OAuth2Error,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload  # noqa: E402
from authlib.oauth2.rfc6750 import (  # noqa: E402
    BearerTokenGenerator,
    BearerTokenValidator,
    InvalidTokenError,
)

from podkit.common import logging as podkit_logging  # noqa: E402
from podkit.common import signals  # noqa: E402
from podkit.common.clock import rfc3339  # noqa: E402
from podkit.common.config import EXIT_CONFIG_ERROR, parse_hostport  # noqa: E402
from podkit.common.httpserver import HttpServer, Request, Response  # noqa: E402

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="oauth-demo",
        description="A stand-in external API and its OAuth2 token endpoint, for the examples. "
        "Not for deployment.",
    )
    parser.add_argument("--listen", default=env("OAUTH_DEMO_LISTEN", "127.0.0.1:9400"))
    parser.add_argument("--client-id", default=env("OAUTH_DEMO_CLIENT_ID", "demo-app"))
    parser.add_argument("--client-secret-file", default=env("OAUTH_DEMO_CLIENT_SECRET_FILE"))
    lifetime = env("OAUTH_DEMO_TOKEN_LIFETIME", "3600")
    parser.add_argument("--token-lifetime", type=float, default=lifetime, help="seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        host, port = parse_hostport(args.listen)
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{args.listen!r}: plain-HTTP OAuth2 only on 127.0.0.1 or [::1]")
        if args.client_secret_file:
            with open(args.client_secret_file) as f:
                secret = f.read().strip()
        else:
            secret = os.environ.get("OAUTH_DEMO_CLIENT_SECRET", "")
        if not secret:
            raise ValueError(
                "no client secret: set --client-secret-file or OAUTH_DEMO_CLIENT_SECRET"
            )
        if args.token_lifetime < 1:
            raise ValueError("--token-lifetime: at least 1 second")
    except (OSError, ValueError) as exc:
        print(f"oauth-demo: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    podkit_logging.setup("oauth-demo")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    demo = Demo(Client(args.client_id, secret), args.token_lifetime, f"http://{hostport}/token")

    async def serve(stop: asyncio.Event) -> int:
        server = HttpServer(demo.handle, max_body=64 * 1024)
        try:
            await server.start(host, port)
        except OSError as exc:
            print(f"oauth-demo: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
            return 1
        log.info(
            "listening",
            extra={
                "listen": args.listen,
                "client_id": args.client_id,
                "lifetime_s": args.token_lifetime,
                "stand_in": True,
            },
        )
        await stop.wait()
        await server.close(timeout=1.0)
        log.info("stopped")
        return 0

    return signals.run(serve)


if __name__ == "__main__":
    sys.exit(main())
