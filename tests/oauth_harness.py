"""A real OAuth2 authorization server (authlib's framework-independent core served by
http.server) and a resource server that checks its bearer tokens, for the auth-adapter tests.

    idp = OAuthServer()                       # or OAuthServer(tls=ServerTls(...)) for HTTPS/mTLS
    idp.add_client("app", secret="s3cr:t")    # client_secret_basic unless auth_method= says
    api = ResourceServer(idp)                 # 401 invalid_token / 403 insufficient_scope
    ...
    idp.token_requests                        # how many token requests came, answered or not
    idp.set_outage("503" | "hang" | "refuse" | None)
    idp.revoke_all()                          # every access token issued so far is now invalid
    api.stop(); idp.stop()

Token endpoint: client_credentials, refresh_token (rotating: the used refresh token is revoked),
RFC 8693 token exchange (a grant class of ours on authlib's base; authlib ships none);
client_secret_basic, client_secret_post, private_key_jwt (authlib's JWTBearerClientAssertion,
jti replay refused), tls_client_auth (RFC 8705: the client certificate's CN) and none; scopes,
audience and resource (invalid_target for ones not allowed); expires_in configurable or absent;
opaque or JWT access tokens.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    BaseGrant,
    ClientCredentialsGrant,
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    RefreshTokenGrant,
    ResourceProtector,
    TokenEndpointMixin,
    TokenMixin,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion

from proxy_harness import BackgroundServer, TlsServerMixin, free_port, poll_until

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE = "urn:ietf:params:oauth:token-type:"
ALL_AUTH_METHODS = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "tls_client_auth",
    "none",
]
Outage = Literal["503", "hang", "refuse"] | None


# -- the server's records ---------------------------------------------------------------------


@dataclass
class Client(ClientMixin):
    client_id: str
    auth_method: str = "client_secret_basic"
    secret: str | None = None
    public_key: Any = None  # joserfc key: private_key_jwt
    cert_cn: str | None = None  # tls_client_auth: the certificate's subject CN
    grant_types: tuple[str, ...] = ("client_credentials", "refresh_token", TOKEN_EXCHANGE)

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and secrets.compare_digest(
            self.secret.encode(), client_secret.encode()
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass
class IssuedToken(TokenMixin):
    access_token: str
    client_id: str
    subject: str
    scope: str | None
    audience: list[str]
    resource: list[str]
    issued_at: float
    lifetime: float
    grant_type: str
    revoked: bool = False

    def get_scope(self) -> str | None:
        return self.scope

    def get_expires_in(self) -> float:
        return self.lifetime

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.lifetime

    def is_revoked(self) -> bool:
        return self.revoked

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id


@dataclass
class RefreshRecord(TokenMixin):
    refresh_token: str
    client_id: str
    subject: str
    scope: str | None
    audience: list[str]
    resource: list[str]
    revoked: bool = False

    def get_scope(self) -> str | None:
        return self.scope

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id


@dataclass
class SeenRequest:
    """One request to the token endpoint as the server saw it."""

    status: int
    form: dict[str, list[str]]
    headers: dict[str, str]
    grant_type: str | None = None
    auth_method: str | None = None  # the method authlib authenticated the client with
    error: str | None = None
    peer_cn: str | None = None

    def one(self, key: str) -> str | None:
        values = self.form.get(key)
        return values[0] if values else None


class InvalidTargetError(OAuth2Error):
    """RFC 8693 2.2.2 / RFC 8707 2: an audience or resource the server does not serve."""

    error = "invalid_target"


# -- authlib glue -----------------------------------------------------------------------------


class _Payload(OAuth2Payload):
    def __init__(self, form: dict[str, list[str]]) -> None:
        self._form = form

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._form.items()}

    @property
    def datalist(self) -> dict[str, list[str]]:  # type: ignore[override]
        return self._form


class _Request(OAuth2Request):
    def __init__(
        self, uri: str, headers: Any, form: dict[str, list[str]], peer_cn: str | None
    ) -> None:
        super().__init__("POST", uri, headers=headers)
        self.payload = _Payload(form)
        self.peer_cn = peer_cn

    @property
    def form(self) -> dict[str, str]:  # type: ignore[override]
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return {}


class _Authlib(AuthorizationServer):
    def __init__(self, owner: OAuthServer) -> None:
        super().__init__(scopes_supported=["read", "write", "admin"])
        self.owner = owner

    def query_client(self, client_id: str) -> Client | None:
        return self.owner.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        self.owner._save(token, request)

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def validate_requested_scope(self, scope: str | None) -> None:
        super().validate_requested_scope(scope)
        form = self.owner._current_form
        allowed = self.owner.allowed_targets
        if allowed is not None:
            for target in form.get("audience", []) + form.get("resource", []):
                if target not in allowed:
                    raise InvalidTargetError(f"not a target of this server: {target}")


class _ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def create_token_response(self) -> tuple[int, Any, Any]:
        # As authlib's, but a refresh token too when the test asks (RFC 6749 4.4.3 says SHOULD
        # NOT; some servers do, and the adapter must use it then).
        token = self.generate_token(
            scope=self.request.payload.scope,
            include_refresh_token=self.server.owner.refresh_tokens_for_client_credentials,
        )
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _Refresh(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: the used one is revoked below

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        record = self.server.owner.refresh_tokens.get(refresh_token)
        return record if record is not None and not record.revoked else None

    def authenticate_user(self, refresh_token: RefreshRecord) -> str:
        return refresh_token.subject

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        refresh_token.revoked = True


class _TokenExchange(BaseGrant, TokenEndpointMixin):
    """RFC 8693 token exchange: a subject token the server trusts for an access token."""

    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("token exchange is not allowed for this client")
        form = self.request.form
        subject_token = form.get("subject_token")
        subject_token_type = form.get("subject_token_type")
        if not subject_token or not subject_token_type:
            raise InvalidRequestError("Missing subject_token or subject_token_type")
        owner = self.server.owner
        if subject_token_type not in owner.subject_token_types:
            raise InvalidRequestError("Unsupported subject_token_type")
        subject = owner.subject_tokens.get(subject_token)
        if subject is None:  # RFC 8693 2.2.2: invalid_request for an invalid subject token
            raise InvalidRequestError("Invalid subject_token")
        self.request.client = client
        self.request.user = subject
        self.validate_requested_scope()

    def create_token_response(self) -> tuple[int, Any, Any]:
        token = self.generate_token(
            user=self.request.user,
            scope=self.request.payload.scope,
            include_refresh_token=False,
        )
        token["issued_token_type"] = TOKEN_TYPE + "access_token"
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _PrivateKeyJwt(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, owner: OAuthServer) -> None:
        super().__init__(leeway=5)
        self.owner = owner

    def get_audiences(self) -> list[str]:
        return [self.owner.token_url]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        if jti in self.owner.seen_jti:
            return False
        self.owner.seen_jti.add(jti)
        self.owner.assertion_claims.append(dict(claims))
        return True

    def resolve_client_public_key(self, client: Client) -> Any:
        return client.public_key


def _tls_client_auth(query_client: Any, request: _Request) -> Client | None:
    """RFC 8705 2.1.2 (simplified to the subject CN): the certificate the client presented in the
    TLS handshake, verified against the server's client CA, names the registered client."""
    client_id = request.form.get("client_id")
    client = query_client(client_id) if client_id else None
    if (
        client is not None
        and client.auth_method == "tls_client_auth"
        and request.peer_cn is not None
        and request.peer_cn == client.cert_cn
    ):
        return client
    return None


# -- HTTP -------------------------------------------------------------------------------------


class _HttpServer(BackgroundServer, ThreadingHTTPServer):
    request_queue_size = 1024  # socketserver's 5 would drop the SYNs of a burst of connections

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), handler)
        self.serve_in_background()

    def serve_in_background(self) -> None:
        # A short poll: stop() waits up to one interval (0.5 s by default, per server).
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


@dataclass(frozen=True)
class ServerTls:
    """HTTPS for a test server: its certificate, and the CA its clients' certificates must chain
    to (None: no client certificates asked for)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class _HttpsServer(TlsServerMixin, _HttpServer):
    def __init__(
        self, port: int, handler: type[BaseHTTPRequestHandler], owner: Any, tls: ServerTls
    ) -> None:
        self._setup_tls(tls.cert, tls.key)
        if tls.client_ca is not None:
            # Optional: a client without a certificate may still use a secret.
            self.tls.verify_mode = ssl.CERT_OPTIONAL
            self.tls.load_verify_locations(str(tls.client_ca))
        super().__init__(port, handler, owner)


def _peer_cn(connection: Any) -> str | None:
    if not isinstance(connection, ssl.SSLSocket):
        return None
    cert = connection.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def _send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: Any,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    out = json.dumps(body).encode()
    handler.send_response(status)
    sent = set()
    for key, value in headers or []:
        if key.lower() == "content-type":
            sent.add("content-type")
        handler.send_header(key, value)
    if "content-type" not in sent:
        handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(out)))
    handler.end_headers()
    handler.wfile.write(out)


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_POST(self) -> None:  # noqa: N802
        owner: OAuthServer = self.server.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        headers = {k: v for k, v in self.headers.items()}
        outage = owner.outage
        if outage == "hang":
            owner._record(SeenRequest(0, form, headers, grant_type=_first(form, "grant_type")))
            owner._outage_over.wait(30)
            self.close_connection = True
            return
        if outage == "503":
            owner._record(SeenRequest(503, form, headers, grant_type=_first(form, "grant_type")))
            page = b"<html><body>upstream unavailable</body></html>"
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            if owner.retry_after is not None:
                self.send_header("Retry-After", str(owner.retry_after))
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if owner.delay:
            time.sleep(owner.delay)  # the server's own latency, so concurrent callers overlap
        if self.path.split("?")[0] != "/token":
            _send_json(self, 404, {"error": "not_found"})
            return
        request = _Request(owner.token_url, self.headers, form, _peer_cn(self.connection))
        with owner.lock:
            owner._current_form = form
            status, body, out_headers = owner.authlib.create_token_response(request)
            owner._current_form = {}
            error = body.get("error") if isinstance(body, dict) else None
            owner._record(
                SeenRequest(
                    status,
                    form,
                    headers,
                    grant_type=_first(form, "grant_type"),
                    auth_method=request.auth_method,
                    error=error,
                    peer_cn=request.peer_cn,
                )
            )
        if error and owner.echo_credentials_in_errors:
            # A careless server that quotes what it was sent: the client must not pass it on.
            body["error_description"] = (
                f"got {headers.get('Authorization', '')} {raw.decode('utf-8', 'replace')}: "
                f"{body.get('error_description', '')}"
            )
        _send_json(self, status, body, list(out_headers))

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _first(form: dict[str, list[str]], key: str) -> str | None:
    values = form.get(key)
    return values[0] if values else None


class OAuthServer:
    """The authorization server. Every knob is a plain attribute a test may set at any time."""

    def __init__(self, tls: ServerTls | None = None, *, token_format: str = "opaque") -> None:
        from joserfc.jwk import ECKey

        self.tls = tls
        self.token_format = token_format  # "opaque" | "jwt"
        self.expires_in: int | None = 3600  # None: the answer has no expires_in
        self.lifetime_when_absent = 3600.0  # the real lifetime then
        self.refresh_tokens_for_client_credentials = False
        self.allowed_targets: set[str] | None = None  # None: any audience/resource
        self.subject_tokens: dict[str, str] = {}  # token exchange: subject token -> subject
        self.subject_token_types = {TOKEN_TYPE + "jwt", TOKEN_TYPE + "access_token"}
        self.delay = 0.0
        self.retry_after: int | None = None  # Retry-After on the 503s of an outage
        self.echo_credentials_in_errors = False
        self.outage: Outage = None
        self.clients: dict[str, Client] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.refresh_tokens: dict[str, RefreshRecord] = {}
        self.seen: list[SeenRequest] = []
        self.seen_jti: set[str] = set()
        self.assertion_claims: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self._current_form: dict[str, list[str]] = {}
        self._outage_over = threading.Event()
        self._jwt_key = ECKey.generate_key("P-256") if token_format == "jwt" else None
        self.authlib = _Authlib(self)
        self.authlib.register_token_generator("default", self._generate)
        self.authlib.register_grant(_ClientCredentials)
        self.authlib.register_grant(_Refresh)
        self.authlib.register_grant(_TokenExchange)
        self.authlib.register_client_auth_method("private_key_jwt", _PrivateKeyJwt(self))
        self.authlib.register_client_auth_method("tls_client_auth", _tls_client_auth)
        self.port = free_port()
        self._httpd: _HttpServer | None = None
        self._serve()

    # -- addresses and counts --

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def token_requests(self) -> int:
        """Token requests received, answered or not (outages included)."""
        with self.lock:
            return len(self.seen)

    def requests(self) -> list[SeenRequest]:
        with self.lock:
            return list(self.seen)

    def issued(self) -> list[IssuedToken]:
        with self.lock:
            return list(self.tokens.values())

    # -- knobs --

    def add_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        auth_method: str = "client_secret_basic",
        public_key: Any = None,
        cert_cn: str | None = None,
    ) -> Client:
        client = Client(client_id, auth_method, secret, public_key, cert_cn)
        self.clients[client_id] = client
        return client

    def set_outage(self, outage: Outage) -> None:
        """Make the token endpoint fail: "503" answers 503 (HTML); "hang" accepts and never
        answers; "refuse" closes the listening socket (connection refused). None: back to
        normal, on the same port."""
        previous, self.outage = self.outage, outage
        if outage == "hang":
            self._outage_over.clear()
        else:
            self._outage_over.set()
        if outage == "refuse" and self._httpd is not None:
            self._httpd.stop()
            self._httpd = None
        if previous == "refuse" and outage != "refuse":
            self._serve()

    def revoke_all(self) -> None:
        """Every access token issued so far is revoked (the API answers 401 invalid_token)."""
        with self.lock:
            for token in self.tokens.values():
                token.revoked = True

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            for record in self.refresh_tokens.values():
                record.revoked = True

    def lookup(self, access_token: str) -> IssuedToken | None:
        with self.lock:
            return self.tokens.get(access_token)

    def stop(self) -> None:
        self._outage_over.set()
        if self._httpd is not None:
            self._httpd.stop()
            self._httpd = None

    # -- internals --

    def _serve(self) -> None:
        if self.tls is not None:
            self._httpd = _HttpsServer(self.port, _TokenHandler, self, self.tls)
        else:
            self._httpd = _HttpServer(self.port, _TokenHandler, self)

    def _record(self, seen: SeenRequest) -> None:
        with self.lock:
            self.seen.append(seen)

    def _generate(
        self,
        grant_type: str,
        client: Client,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        now = int(time.time())
        form = self._current_form
        subject = user if isinstance(user, str) else client.client_id
        if self.token_format == "jwt":
            from joserfc import jwt

            claims: dict[str, Any] = {
                "iss": self.url,
                "sub": subject,
                "client_id": client.client_id,
                "jti": secrets.token_urlsafe(16),
                "iat": now,
                "exp": now + int(self.expires_in or self.lifetime_when_absent),
            }
            targets = form.get("audience", []) + form.get("resource", [])
            if targets:
                claims["aud"] = targets
            if scope:
                claims["scope"] = scope
            access = jwt.encode({"alg": "ES256"}, claims, self._jwt_key)
        else:
            access = "at-" + secrets.token_urlsafe(24)
        token: dict[str, Any] = {"token_type": "Bearer", "access_token": access}
        if self.expires_in is not None:
            token["expires_in"] = self.expires_in
        if scope:
            token["scope"] = scope
        if include_refresh_token:
            token["refresh_token"] = "rt-" + secrets.token_urlsafe(24)
        return token

    def _save(self, token: dict[str, Any], request: _Request) -> None:
        form = self._current_form
        parent = request.refresh_token  # a refresh keeps what the original grant was for
        audience = parent.audience if parent else form.get("audience", [])
        resource = parent.resource if parent else form.get("resource", [])
        subject = request.user if isinstance(request.user, str) else request.client.client_id
        self.tokens[token["access_token"]] = IssuedToken(
            access_token=token["access_token"],
            client_id=request.client.client_id,
            subject=subject,
            scope=token.get("scope"),
            audience=list(audience),
            resource=list(resource),
            issued_at=time.time(),
            lifetime=float(self.expires_in or self.lifetime_when_absent),
            grant_type=request.payload.grant_type,
        )
        if "refresh_token" in token:
            self.refresh_tokens[token["refresh_token"]] = RefreshRecord(
                token["refresh_token"],
                request.client.client_id,
                subject,
                token.get("scope"),
                list(audience),
                list(resource),
            )


# -- the resource server ----------------------------------------------------------------------


class _Validator(BearerTokenValidator):
    def __init__(self, owner: OAuthServer) -> None:
        super().__init__(realm="podkit-test")
        self.owner = owner

    def authenticate_token(self, token_string: str) -> IssuedToken | None:
        return self.owner.lookup(token_string)


class _HeadersOnly:
    def __init__(self, headers: Any) -> None:
        self.headers = headers


class _ApiHandler(BaseHTTPRequestHandler):
    """Any method, any path: 200 with JSON naming the token's client when the bearer token is
    valid. /scope/<name>/... needs scope <name>."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def _answer(self) -> None:
        api: ResourceServer = self.server.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        api._record(self.command, self.path, dict(self.headers.items()), raw)
        if not self.headers.get("Authorization"):
            # RFC 6750 3.1: no credentials, no error code.
            _send_json(self, 401, {"error": "unauthorized"}, [_challenge('realm="podkit-test"')])
            return
        parts = self.path.split("/")
        required = [parts[2]] if self.path.startswith("/scope/") and len(parts) > 2 else None
        try:
            token = api.protector.validate_request(required, _HeadersOnly(self.headers))
            if api.required_audience and api.required_audience not in token.audience:
                raise InvalidTokenError(description="The token is not for this API.")
        except InvalidTokenError as exc:
            _send_json(self, 401, {"error": exc.error}, exc.get_headers())
            return
        except InsufficientScopeError as exc:
            challenge = _challenge(f'error="{exc.error}", scope="{" ".join(required or [])}"')
            _send_json(self, 403, {"error": exc.error}, [challenge])
            return
        except OAuth2Error as exc:  # not a Bearer token at all
            _send_json(self, 401, {"error": exc.error}, [_challenge('realm="podkit-test"')])
            return
        _send_json(
            self,
            200,
            {
                "client_id": token.client_id,
                "subject": token.subject,
                "scope": token.scope,
                "audience": token.audience,
                "method": self.command,
                "path": self.path,
                "body": raw.decode("utf-8", "replace"),
            },
        )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _challenge(params: str) -> tuple[str, str]:
    return ("WWW-Authenticate", f"Bearer {params}")


class ResourceServer:
    """An API protected by `authz`'s tokens (authlib's ResourceProtector and RFC 6750 bearer
    validator): 401 `Bearer error="invalid_token"` for unknown, expired or revoked tokens, 403
    `insufficient_scope` when /scope/<name>/ is not in the token's scope."""

    def __init__(self, authz: OAuthServer, *, required_audience: str | None = None) -> None:
        self.authz = authz
        self.required_audience = required_audience
        self.protector = ResourceProtector()
        self.protector.register_token_validator(_Validator(authz))
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = _HttpServer(0, _ApiHandler, self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.port}"

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.seen.append({"method": method, "path": path, "headers": headers, "body": body})

    def stop(self) -> None:
        self._httpd.stop()


# -- helpers ----------------------------------------------------------------------------------


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume, and updated the same way:
    `<dir>/<key>` is a symlink to `..data/<key>`, `..data` a symlink to `..<generation>/` that
    update() swaps atomically (rename of a new symlink over it) to a freshly written directory.
    """

    def __init__(self, root: Path, data: dict[str, str]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._generation = 0
        self.update(data)
        for key in data:
            (self.root / key).symlink_to(Path("..data") / key)

    def path(self, key: str) -> Path:
        return self.root / key

    def update(self, data: dict[str, str]) -> None:
        self._generation += 1
        gen = self.root / f"..2026_11_25_22_15_{self._generation:02d}.{os.getpid()}"
        gen.mkdir()
        for key, value in data.items():
            (gen / key).write_text(value)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(gen.name)
        os.replace(tmp, self.root / "..data")


def client_key(tmp: Path, kind: str = "rsa") -> tuple[Path, Any]:
    """A private key PEM file for private_key_jwt, and its public key for the server (joserfc)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from joserfc.jwk import ECKey, RSAKey

    key: Any
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    path = tmp / f"client-{kind}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = RSAKey.import_key(public_pem) if kind == "rsa" else ECKey.import_key(public_pem)
    return path, public


# -- the auth-adapter under test ----------------------------------------------------------------


class AuthAdapter:
    """`python -m podkit.images.auth_adapter --config <file>`, started and waited for."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
    ) -> None:
        import yaml

        from log_agent_harness import ImageProcess, image_env

        self.port = free_port()
        self.admin_port = free_port()
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            **config,
        }
        self.config_path = tmp / f"auth-adapter-{time.monotonic_ns()}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process = ImageProcess(
            "podkit.images.auth_adapter",
            ["--config", str(self.config_path)],
            image_env(**(env or {})),
            tmp,
        )
        self.process.wait_for(lambda recs: any(r.get("msg") == "listening" for r in recs), 10.0)
        if wait_ready and not poll_until(lambda: self.admin_get("/readyz")[0] == 200, 10.0):
            raise AssertionError("the auth-adapter never got ready:\n" + self.output())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_get(self, path: str) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}{path}", timeout=5
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stats(self) -> dict[str, Any]:
        return json.loads(self.admin_get("/stats")[1])

    def metrics(self) -> str:
        return self.admin_get("/metrics")[1].decode()

    def output(self) -> str:
        """Everything the adapter wrote, stdout and stderr."""
        return "\n".join(self.process.lines) + "\n" + self.process.stderr()

    def stop(self) -> tuple[int, float]:
        if self.process.proc.poll() is not None:
            return self.process.proc.returncode, 0.0
        return self.process.terminate(timeout=10.0)
