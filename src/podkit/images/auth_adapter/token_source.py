"""The asyncio shell around the token cache: what the proxy calls for each request.

    source = TokenSource(config.oauth2, name="billing-api", metrics=metrics)
    await source.start()                # optional: first token now, refresh ahead in background
    try:
        token = await source.token()    # Token; token.authorization == "Bearer ..."
    except NoToken as exc:              # exc.reason: why (no secret), exc.retry_in: seconds
        ...answer 503 with exc.reason
    if api_said_401_invalid_token:
        source.invalidate(token)        # the next token() fetches a new one (once, not per 401)
    source.ready                        # a first token was obtained
    await source.aclose()

Decisions come from token_cache.TokenCache; requests are built and answers parsed by
token_request; this module only reads the credential files, signs assertions and POSTs (aiohttp:
the token request is not the hot path, and it is imported on the first fetch, not at start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from podkit.common.config_section import display_url
from podkit.images.auth_adapter import token_request as tr
from podkit.images.auth_adapter.oauth_config import USES_SECRET, OAuth2Config
from podkit.images.auth_adapter.secrets import Secret, SecretError, SecretSource, scrub
from podkit.images.auth_adapter.token_cache import Action, CachePolicy, Token, TokenCache
from podkit.images.auth_adapter.token_metrics import TokenMetrics

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("auth-adapter.oauth2")

__all__ = ["NoToken", "Token", "TokenSource", "TokenSources"]

CREDENTIAL_CHECK_INTERVAL = 1.0  # seconds between stat()s of the credential files while failing
_ROUNDS = 3  # fetch-and-wait rounds one token() call may go through before giving up


class NoToken(Exception):
    """No token can be had now. `reason` says why in words fit for a 503 body (never a secret);
    `retry_in` is the seconds until the next token request may start, when known."""

    def __init__(self, reason: str, retry_in: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_in = retry_in


class TokenSource:
    """Tokens for one OAuth2 client: cached, single flight, refreshed ahead, backed off."""

    def __init__(
        self,
        config: OAuth2Config,
        *,
        name: str = "default",
        metrics: TokenMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics if metrics is not None else TokenMetrics()
        self._clock = clock
        cfg = config
        self._cache = TokenCache(
            CachePolicy(
                refresh_margin=cfg.refresh.margin,
                refresh_fraction=cfg.refresh.fraction,
                default_expires_in=cfg.refresh.default_expires_in,
                backoff_initial=cfg.backoff.initial,
                backoff_max=cfg.backoff.max,
            ),
            rand,
        )
        env = os.environ if environ is None else environ
        self._secret: SecretSource | None = None
        if cfg.client_secret_file is not None:
            self._secret = SecretSource("client_secret_file", path=cfg.client_secret_file)
        elif cfg.client_secret_env is not None:
            self._secret = SecretSource("client_secret_env", env=cfg.client_secret_env, environ=env)
        self._key_file = (
            SecretSource("private_key_file", path=cfg.private_key_file)
            if cfg.private_key_file is not None
            else None
        )
        self._key: tr.SigningKey | None = None
        self._subject = (
            SecretSource("subject_token_file", path=cfg.subject_token_file)
            if cfg.subject_token_file is not None
            else None
        )
        self._initial_refresh = (
            SecretSource("refresh_token_file", path=cfg.refresh_token_file)
            if cfg.refresh_token_file is not None
            else None
        )
        self._refresh_token: Secret | None = None  # the last one the server returned
        self._https = urlsplit(cfg.token_url).scheme == "https"
        self._ssl: ssl.SSLContext | None = None
        self._ssl_stamp: tuple[Any, ...] | None = None
        self._flight: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._ready = False
        self._last_credential_check = float("-inf")

    def __repr__(self) -> str:
        c = self.config
        return (
            f"TokenSource({self.name}, {display_url(c.token_url)}, {c.grant_type}, "
            f"{c.auth_method}, client_id={c.client_id!r})"
        )

    # -- what the proxy calls -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """A first token was obtained (it stays True: later outages show as NoToken)."""
        return self._ready

    async def token(self) -> Token:
        """A valid token: the cached one, or one fetched now (by this call or the one already
        running). Raises NoToken with the reason when none can be had, at once while the token
        endpoint is backing off after a failure."""
        waited = False
        for _ in range(_ROUNDS):
            now = self._clock()
            d = self._cache.decide(now)
            if d.action is Action.USE or d.action is Action.USE_AND_REFRESH:
                if d.action is Action.USE_AND_REFRESH:
                    self._launch()
                if not waited:  # a hit: served without waiting for a token request
                    self.metrics.hit(self.name)
                assert d.token is not None
                return d.token
            if d.action is Action.FAIL:
                if self._credentials_changed(now):
                    self._cache.credentials_changed()
                    continue
                raise NoToken(d.reason or "no token", d.retry_in)
            if d.action is Action.FETCH:
                self._launch()
            assert self._flight is not None
            # shield: a caller that gives up (cancelled) must not cancel the fetch for the rest.
            await asyncio.shield(self._flight)
            waited = True
        raise NoToken(self._cache.last_error or "the tokens obtained expired before they arrived")

    def cached(self) -> Token | None:
        """The cached token when it is valid, without waiting (a refresh that is due starts in
        the background); None: call token()."""
        now = self._clock()
        token = self._cache.token
        if token is not None and now < token.refresh_at:  # decide() would say USE: skip it
            self.metrics.hit(self.name)
            return token
        if self._cache.valid_token(now) is None:
            return None
        d = self._cache.decide(now)  # USE or USE_AND_REFRESH, the token being valid
        if d.action is Action.USE_AND_REFRESH:
            self._launch()
        self.metrics.hit(self.name)
        return d.token

    def invalidate(self, token: Token) -> None:
        """The API answered 401 invalid_token for `token`: if it is still the cached one, drop
        it so the next token() fetches a new one. Many 401s for one token make one fetch."""
        if self._cache.invalidate(token, self._clock()):
            log.info("token rejected by the API, getting a new one", extra={"upstream": self.name})
            if self._wake is not None:
                self._wake.set()

    async def start(self) -> None:
        """Fetch the first token and keep refreshing ahead of expiry in the background (without
        it, tokens are fetched when requests need them)."""
        if self._runner is None:
            self._wake = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        tasks = [t for t in (self._runner, *self._tasks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runner = None

    def status(self) -> dict[str, Any]:
        """For logs and debug pages: nothing secret."""
        now = self._clock()
        valid = self._cache.valid_token(now)
        return {
            "upstream": self.name,
            "ready": self._ready,
            "token_valid_for": round(valid.expires_at - now, 3) if valid else None,
            "fetching": self._cache.fetching,
            "failures": self._cache.failures,
            "last_error": self._cache.last_error,
        }

    # -- the fetch ----------------------------------------------------------------------------

    def _launch(self) -> None:
        """Run the fetch the cache just marked started; callers wait on self._flight."""
        loop = asyncio.get_running_loop()
        flight: asyncio.Future[None] = loop.create_future()
        self._flight = flight
        task = loop.create_task(self._fetch(flight))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, flight: asyncio.Future[None]) -> None:
        started = self._clock()
        previous = self._cache.token
        try:
            answer, grant = await self._obtain()
        except tr.TokenEndpointError as exc:
            delay = self._cache.fetch_failed(self._clock(), exc.reason, exc.retry_after)
            self.metrics.fetched(self.name, exc.kind, self._clock() - started)
            log.warning(
                "token request failed",
                extra={
                    "upstream": self.name,
                    "result": exc.kind,
                    "reason": exc.reason,
                    "retry_in": round(delay, 3),
                },
            )
        except asyncio.CancelledError:
            self._cache.fetch_failed(self._clock(), "token request cancelled (shutting down)")
            raise
        except Exception as exc:  # a bug of ours: the waiters must still be released
            reason = f"internal error in the token request: {type(exc).__name__}"
            delay = self._cache.fetch_failed(self._clock(), reason)
            self.metrics.fetched(self.name, "internal_error", self._clock() - started)
            # No traceback: its text could quote a credential.
            log.error("token request crashed", extra={"upstream": self.name, "reason": reason})
        else:
            now = self._clock()
            self._cache.fetch_succeeded(
                now,
                answer.access_token,
                expires_in=answer.expires_in,
                token_type=answer.token_type,
                scope=answer.scope,
            )
            # Lag says how late refresh-ahead was; a lazy source (no start()) that sat idle
            # past its token's expiry was not late, only unused.
            if previous is not None and (self._runner is not None or started < previous.expires_at):
                self.metrics.lag(self.name, now - previous.refresh_at)
            self.metrics.fetched(self.name, "ok", now - started)
            first = not self._ready
            self._ready = True
            log.info(
                "token obtained",
                extra={
                    "upstream": self.name,
                    "grant": grant,
                    "expires_in": answer.expires_in,
                    "scope": answer.scope,
                    "first": first,
                },
            )
        finally:
            if not flight.done():
                flight.set_result(None)
            if self._wake is not None:
                self._wake.set()

    async def _obtain(self) -> tuple[tr.TokenAnswer, str]:
        cfg = self.config
        initial = self._initial_refresh
        if self._refresh_token is not None and initial is not None and initial.changed():
            self._refresh_token = None  # the operator put a new one in the file: it wins
        if self._refresh_token is not None:
            try:
                return await self._send(tr.refresh(self._refresh_token, cfg.resource)), (
                    "refresh_token"
                )
            except tr.TokenEndpointError as exc:
                if exc.error != "invalid_grant":
                    raise
                # Expired or revoked: RFC 6749 5.2 invalid_grant. Start over with the grant.
                self._refresh_token = None
                log.info(
                    "refresh token refused (invalid_grant), using the grant again",
                    extra={"upstream": self.name, "grant": cfg.grant_type},
                )
        return await self._send(self._primary_grant()), cfg.grant_type

    def _primary_grant(self) -> tr.Grant:
        cfg = self.config
        if cfg.grant_type == "token_exchange":
            assert self._subject is not None
            return tr.token_exchange(
                self._read(self._subject),
                cfg.subject_token_type,
                requested_token_type=cfg.requested_token_type,
                scopes=cfg.scopes,
                audience=cfg.audience,
                resource=cfg.resource,
            )
        if cfg.grant_type == "refresh_token":
            assert self._initial_refresh is not None
            return tr.refresh(self._read(self._initial_refresh), cfg.resource)
        return tr.client_credentials(cfg.scopes, cfg.audience, cfg.resource)

    def _read(self, source: SecretSource) -> Secret:
        try:
            return source.get()
        except SecretError as exc:
            raise tr.TokenEndpointError("credentials", str(exc)) from None

    def _client_auth(self) -> tr.ClientAuth:
        cfg = self.config
        method = cfg.auth_method
        if method in USES_SECRET:
            assert self._secret is not None
            return tr.ClientAuth(method, cfg.client_id, secret=self._read(self._secret))
        if method == "private_key_jwt":
            assert self._key_file is not None and cfg.client_id
            if self._key is None or self._key_file.changed():
                pem = self._read(self._key_file).reveal().encode("utf-8")
                try:
                    self._key = tr.load_signing_key(
                        pem, cfg.alg, cfg.key_id, f"private_key_file {cfg.private_key_file}"
                    )
                except ValueError as exc:
                    raise tr.TokenEndpointError("credentials", str(exc)) from None
            assertion = tr.sign_assertion(
                self._key,
                cfg.client_id,
                cfg.assertion_audience or cfg.token_url,
                now=time.time(),
                lifetime=cfg.assertion_lifetime,
                jti=uuid.uuid4().hex,  # RFC 7523 3: servers may refuse a jti seen before
            )
            return tr.ClientAuth(method, cfg.client_id, assertion=assertion)
        return tr.ClientAuth(method, cfg.client_id)

    async def _send(self, grant: tr.Grant) -> tr.TokenAnswer:
        cfg = self.config
        auth = self._client_auth()
        request = tr.build(cfg.token_url, grant, auth)
        hidden: list[str | Secret | None] = [auth.secret, auth.assertion, *request.secrets()]
        hidden += [v for _, v in grant.params if isinstance(v, Secret)]
        answer = await self._post(request, hidden)
        if answer.refresh_token and (cfg.use_refresh_token or cfg.grant_type == "refresh_token"):
            # Servers that rotate refresh tokens revoke the one just used: keep the new one.
            self._refresh_token = Secret(answer.refresh_token)
        return answer

    async def _post(
        self, request: tr.TokenRequest, hidden: list[str | Secret | None]
    ) -> tr.TokenAnswer:
        import aiohttp

        cfg = self.config
        where = display_url(cfg.token_url)
        connector = aiohttp.TCPConnector(ssl=self._ssl_context() or False, force_close=True)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.post(
                    request.url,
                    data=request.body,
                    headers=dict(request.headers),
                    allow_redirects=False,  # never replay credentials to another address
                ) as resp,
            ):
                body = await _read_limited(resp)
                return tr.parse_answer(
                    resp.status,
                    resp.headers.get("Content-Type", ""),
                    body,
                    retry_after=resp.headers.get("Retry-After"),
                    secrets=hidden,
                )
        except tr.TokenEndpointError:
            raise
        except TimeoutError:
            raise tr.TokenEndpointError(
                "timeout", f"token endpoint {where} did not answer within {cfg.timeout:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise _client_error(exc, where, hidden) from None

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https token_url: the system's CAs or tls.ca_file, and the
        client certificate; built again when one of those files changes (cert rotation)."""
        if not self._https:
            return None
        tls = self.config.tls
        stamp = self._tls_stamp()
        if self._ssl is not None and stamp == self._ssl_stamp:
            return self._ssl
        try:
            ctx = ssl.create_default_context(
                cafile=str(tls.ca_file) if tls and tls.ca_file else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise tr.TokenEndpointError(
                "credentials", f"tls.ca_file {tls.ca_file if tls else ''}: cannot load it: {exc}"
            ) from None
        if tls is not None and tls.cert_file is not None:
            try:
                ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
            except (OSError, ssl.SSLError) as exc:
                why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "invalid"
                raise tr.TokenEndpointError(
                    "credentials", f"tls.cert_file {tls.cert_file}: cannot load it: {why}"
                ) from None
        self._ssl, self._ssl_stamp = ctx, stamp
        return ctx

    def _credentials_changed(self, now: float) -> bool:
        """Whether a secret, key, token or TLS file changed since it was read: checked at most
        once a second, and only while requests are failing."""
        if now - self._last_credential_check < CREDENTIAL_CHECK_INTERVAL:
            return False
        self._last_credential_check = now
        sources = (self._secret, self._key_file, self._subject, self._initial_refresh)
        if any(s is not None and s.changed() for s in sources):
            return True
        return self._ssl is not None and self._tls_stamp() != self._ssl_stamp

    def _tls_stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        tls = self.config.tls
        files = [f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f] if tls else []
        return tuple(_file_stamp(f) for f in files)

    # -- the background refresher -------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        while True:
            now = self._clock()
            when = self._cache.next_wakeup(now)
            wake.clear()
            if when is None:  # a fetch is running; its end sets `wake`
                await wake.wait()
                continue
            if when > now:
                # While failing without a token, look at the credential files every second: a
                # fixed secret is used at once, not after the backoff.
                failing = self._cache.valid_token(now) is None and self._cache.failures > 0
                wait = min(when - now, CREDENTIAL_CHECK_INTERVAL) if failing else when - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                if failing and self._credentials_changed(self._clock()):
                    self._cache.credentials_changed()
                continue
            d = self._cache.decide(now)
            if d.action in (Action.FETCH, Action.USE_AND_REFRESH):
                self._launch()
            elif d.action is Action.WAIT and self._flight is not None:
                await asyncio.shield(self._flight)
            else:  # USE or FAIL: nothing due after all; do not spin
                await asyncio.sleep(min(d.retry_in or 0.05, 1.0))


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > tr.MAX_ANSWER_BYTES:
            raise tr.TokenEndpointError(
                "bad_answer", f"token endpoint answer larger than {tr.MAX_ANSWER_BYTES} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _client_error(
    exc: aiohttp.ClientError, where: str, hidden: list[str | Secret | None]
) -> tr.TokenEndpointError:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        why = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        return tr.TokenEndpointError(
            "tls_error", f"TLS: the certificate of token endpoint {where} was refused: {why}"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return tr.TokenEndpointError(
            "tls_error", f"TLS handshake with token endpoint {where} failed: {exc}"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or str(exc.os_error)
        return tr.TokenEndpointError(
            "unreachable", f"cannot connect to token endpoint {where}: {why}"
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return tr.TokenEndpointError(
            "unreachable", f"token endpoint {where} closed the connection without an answer"
        )
    # ClientPayloadError, ClientResponseError...: the server spoke, but not a usable answer.
    text = scrub(f"{type(exc).__name__}: {exc}", hidden)
    return tr.TokenEndpointError("server_error", f"token request to {where} failed: {text}")


def _settings(config: OAuth2Config) -> dict[str, Any]:
    settings = config.model_dump()
    settings["scopes"] = sorted(settings["scopes"])  # as in cache_key(): the order means nothing
    return settings


def _file_stamp(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class TokenSources:
    """The token caches of an adapter: one TokenSource per OAuth2Config.cache_key(), so
    upstreams that ask the same token endpoint for the same token (client, grant, scopes,
    audience, resource) share it (the first upstream's name labels its metrics)."""

    def __init__(self, metrics: TokenMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else TokenMetrics()
        self.metrics.ready = lambda: {s.name: s.ready for s in self._by_key.values()}
        self._by_key: dict[tuple[Any, ...], TokenSource] = {}

    def get(self, name: str, config: OAuth2Config) -> TokenSource:
        """The source for upstream `name`. ValueError when another upstream has the same cache
        key but other settings (which would win is not obvious)."""
        key = config.cache_key()
        source = self._by_key.get(key)
        if source is None:
            source = TokenSource(config, name=name, metrics=self.metrics)
            self._by_key[key] = source
        elif _settings(source.config) != _settings(config):
            raise ValueError(
                f"upstreams {source.name!r} and {name!r} use the same OAuth2 client, scopes and "
                "audience but different oauth2 settings: make them equal"
            )
        return source

    def all(self) -> list[TokenSource]:
        return list(self._by_key.values())

    @property
    def ready(self) -> bool:
        return all(s.ready for s in self._by_key.values())

    async def start(self) -> None:
        for source in self._by_key.values():
            await source.start()

    async def aclose(self) -> None:
        for source in self._by_key.values():
            await source.aclose()
