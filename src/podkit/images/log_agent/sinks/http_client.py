"""What the HTTP sinks (http, loki, elasticsearch, otlp) share: config fields, client, status rules.

Encoding stays in each sink and is pure; this module only sends. One POST per `post` call, no
retries: the sink's buffer retries with backoff, batches, splits and sends several at a time
(`batching`, sinks/base.py).

Status rules: 2xx taken; 408, 429 and 5xx retried; 413 too large (the buffer halves the
request); any other 4xx retried with the sink shown as blocked (`on_client_error: retry`, the
default: credentials get fixed, the data must not be thrown away meanwhile), or dropped and
counted (`on_client_error: drop`). aiohttp is imported in `start()`, not here: it
costs ~0.3 s to import, and an agent without HTTP sinks should not pay for it.

Secrets (password, token) are kept as pydantic SecretStr (masked in `--dry-run` output and
reprs), sent only in the Authorization header, and masked in every error message: a receiver that
echoes the request back in its error body does not leak them into the agent's logs.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import os
import re
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from podkit.common.config_section import Section, check_http_url, display_url
from podkit.images.log_agent.sinks.base import (
    Batching,
    RejectedError,
    RetryableError,
    TooLargeError,
)

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("log-agent.sink")

BODY_SNIPPET_CHARS = 200  # of a refused answer's body, in the error message
# Compressing a large body takes milliseconds: do it off the event loop (zlib drops the GIL).
GZIP_IN_THREAD_BYTES = 256 * 1024
# Set by the sink itself: a user value would corrupt the request.
_RESERVED_HEADERS = {"content-length", "content-encoding", "transfer-encoding", "host"}
# User headers whose values are masked in messages like auth's (an API key given as a header).
_SECRET_HEADER = re.compile(r"auth|token|key|secret|cookie", re.IGNORECASE)


class BasicAuth(Section):
    strategy: Literal["basic"]
    user: str
    password: SecretStr | None = None
    password_file: Path | None = Field(default=None, description="read again when it changes")

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password and password_file")
        return self


class BearerAuth(Section):
    strategy: Literal["bearer"]
    token: SecretStr | None = None
    token_file: Path | None = Field(
        default=None, description="read again when it changes (projected service account token)"
    )

    @model_validator(mode="after")
    def _one_token(self) -> BearerAuth:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("set exactly one of token and token_file")
        return self


Auth = Annotated[BasicAuth | BearerAuth, Field(discriminator="strategy")]


class TlsConfig(Section):
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle trusted instead of the system's"
    )
    verify: bool = Field(default=True, description="false: accept any certificate (testing only)")
    cert_file: Path | None = Field(default=None, description="PEM client certificate (mTLS)")
    key_file: Path | None = Field(default=None, description="its key; default: in cert_file")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class HttpClientConfig(Section):
    """The fields every HTTP sink has. Sinks narrow `endpoint` (a default, or a base URL)."""

    endpoint: str
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Auth | None = None
    tls: TlsConfig | None = None
    timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds for one request: a stalled receiver holds a request no longer",
    )
    compression: Literal["none", "gzip"] = "none"
    max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="of a request body before compression: larger batches are split (nginx's "
        "default client_max_body_size is 1 MiB)",
    )
    max_events: int = Field(default=10_000, ge=1, description="events in one request")
    linger: float = Field(
        default=0.1, ge=0, le=60, description="seconds a request that is not full waits for more"
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="requests in flight")
    on_client_error: Literal["retry", "drop"] = Field(
        default="retry",
        description="a 4xx other than 408, 413 and 429: retry (the sink shows as blocked until "
        "the receiver takes the data) or drop the events, counted",
    )

    def batching(self) -> Batching:
        return Batching(self.max_bytes, self.max_events, self.linger, self.concurrency)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return check_http_url(value, instead="auth")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the sink")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> HttpClientConfig:
        if self.auth is not None and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("set either auth or an Authorization header, not both")
        if self.tls is not None and urlsplit(self.endpoint).scheme != "https":
            raise ValueError("tls settings need an https:// endpoint")
        return self


def raise_for_status(
    sink_id: str,
    url: str,
    status: int,
    body: bytes,
    secrets: Iterable[str] = (),
    on_client_error: Literal["retry", "drop"] = "retry",
) -> None:
    """2xx returns; 408, 429 and 5xx raise RetryableError, 413 TooLargeError; any other status
    RetryableError with `refused`, or RejectedError with `on_client_error: drop`."""
    if 200 <= status < 300:
        return
    snippet = " ".join(body[: BODY_SNIPPET_CHARS * 4].decode("utf-8", "replace").split())
    message = redact(
        f"{sink_id}: POST {display_url(url)}: HTTP {status}: {snippet[:BODY_SNIPPET_CHARS]}",
        secrets,
    )
    if status in (408, 429) or status >= 500:
        raise RetryableError(message)
    if status == 413:
        raise TooLargeError(message)
    if on_client_error == "retry":
        raise RetryableError(message, refused=f"HTTP {status}")
    raise RejectedError(message, reason=f"http_{status}")


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class _Secret:
    """A secret given inline or in a file; the file is read again when it changes. Rotated
    Kubernetes tokens are swapped in by a symlink flip: stat follows it, so the inode changes."""

    def __init__(self, inline: SecretStr | None, path: Path | None, what: str) -> None:
        self._value = inline.get_secret_value() if inline is not None else ""
        self._path = path
        self._what = what
        self._stamp: tuple[int, int, int] | None = None

    def get(self) -> str:
        if self._path is None:
            return self._value
        try:
            st = os.stat(self._path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._value = self._path.read_text(encoding="utf-8").strip()
                self._stamp = stamp
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            # Retryable: a mounted Secret may appear or be fixed while events wait.
            raise RetryableError(f"cannot read {self._what} {self._path}: {reason}") from None
        return self._value


class _Authorization:
    def __init__(self, auth: BasicAuth | BearerAuth | None) -> None:
        self._auth = auth
        self._secret: _Secret | None = None
        if isinstance(auth, BasicAuth):
            self._secret = _Secret(auth.password, auth.password_file, "auth.password_file")
        elif isinstance(auth, BearerAuth):
            self._secret = _Secret(auth.token, auth.token_file, "auth.token_file")
        self.secrets: tuple[str, ...] = ()  # what to mask in messages: values last sent

    def header(self) -> str | None:
        if self._secret is None:
            return None
        secret = self._secret.get()
        if isinstance(self._auth, BasicAuth):
            encoded = base64.b64encode(f"{self._auth.user}:{secret}".encode()).decode("ascii")
            self.secrets = (secret, encoded)
            return f"Basic {encoded}"
        self.secrets = (secret,)
        return f"Bearer {secret}"


def ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client context; OSError (missing file, bad PEM) names the setting at fault."""
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
    except OSError as exc:
        raise OSError(f"tls.ca_file {tls.ca_file}: {exc.strerror or exc}") from None
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except OSError as exc:
            raise OSError(
                f"tls.cert_file {tls.cert_file} / key_file {tls.key_file}: {exc.strerror or exc}"
            ) from None
    return ctx


class HttpClient:
    """One aiohttp session for one sink; `post` makes one attempt and applies the status rules."""

    def __init__(self, sink_id: str, cfg: HttpClientConfig) -> None:
        self.sink_id = sink_id
        self.cfg = cfg
        self._auth = _Authorization(cfg.auth)
        self._header_secrets = _header_secrets(cfg.headers)
        self._session: aiohttp.ClientSession | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)

    async def start(self) -> None:
        if self._session is not None:
            return
        import aiohttp  # here, not at module level: see the module docstring

        ssl_arg: ssl.SSLContext | bool = True
        if self.cfg.tls is not None:
            ssl_arg = ssl_context(self.cfg.tls)
            if not self.cfg.tls.verify:
                log.warning(
                    "TLS certificate verification is off", extra={"component": self.sink_id}
                )
        self._errors = (aiohttp.ClientError, OSError)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_arg),
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            headers={"User-Agent": "podkit-log-agent"},
        )

    async def post(
        self, url: str, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """POST `body`; the answer's body when the status is 2xx, else Retryable/RejectedError."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        sent: dict[str, str] = {"Content-Type": content_type, **self.cfg.headers, **(headers or {})}
        try:
            authorization = self._auth.header()
        except RetryableError as exc:
            raise RetryableError(f"{self.sink_id}: {exc}") from None
        if authorization is not None:
            sent["Authorization"] = authorization
        if self.cfg.compression == "gzip":
            body = await _gzip(body)
            sent["Content-Encoding"] = "gzip"
        where = f"{self.sink_id}: POST {display_url(url)}"
        try:
            # No redirects: following one would turn the POST into a GET and lose the body.
            async with self._session.post(
                url, data=body, headers=sent, allow_redirects=False
            ) as resp:
                status, answer = resp.status, await resp.read()
        except TimeoutError:
            raise RetryableError(f"{where}: no answer within {self.cfg.timeout:g} s") from None
        except self._errors as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", self._secrets())
            raise RetryableError(f"{where}: {detail}") from None
        raise_for_status(
            self.sink_id, url, status, answer, self._secrets(), self.cfg.on_client_error
        )
        return answer

    def _secrets(self) -> tuple[str, ...]:
        return self._auth.secrets + self._header_secrets

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _header_secrets(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Values of headers named like credentials, and their part after a scheme ("ApiKey x")."""
    found: list[str] = []
    for name, value in headers.items():
        if _SECRET_HEADER.search(name):
            found += [value, value.partition(" ")[2]]
    # Longest first: masking a part first would leave the rest of the whole value showing.
    return tuple(sorted({v for v in found if v}, key=len, reverse=True))


async def _gzip(body: bytes) -> bytes:
    # mtime=0: the same payload compresses to the same bytes.
    if len(body) < GZIP_IN_THREAD_BYTES:
        return gzip.compress(body, compresslevel=6, mtime=0)
    return await asyncio.to_thread(gzip.compress, body, 6, mtime=0)


def base_url(endpoint: str) -> str:
    """The endpoint without a trailing slash, so API paths can be appended."""
    return endpoint.rstrip("/")
