"""The OCI distribution API client (Docker Registry v2): manifests and blobs, one request at a
time each, with the behaviour a pull needs to be trusted, and the push of blobs and manifests.

- Auth: a 401's `WWW-Authenticate` challenge is answered once per request: Bearer (a token from
  the realm for the request's scope, anonymous or with Basic credentials, cached until it
  expires) or Basic. Credentials and tokens never appear in a message.
- Redirects (blob storage) are followed by hand, so the registry's Authorization never goes to
  another host.
- 429 and 5xx, and a connection that fails, are retried with backoff (1 s doubling, 4 tries),
  waiting what `Retry-After` says when it says something.
- Blobs stream to an ingest file and are hashed as they come. An interrupted download goes on
  with a Range request from what the file holds, in this run or a later one; a server that
  ignores the Range starts it over. The digest is checked at the end: a mismatch throws the file
  away.
- No byte for `progress_timeout` seconds (default 60, containerd's image_pull_progress_timeout)
  aborts the download with a message that says so: never a pull left hanging.
- Endpoints (mirrors first, then the registry itself) are tried in order; a loopback registry
  is tried over HTTPS, then plain HTTP.
- Push goes to the registry itself, never a mirror, with a token scoped `pull,push`: a blob
  the repository has already is not sent (HEAD); one that another repository of the registry
  has is mounted from it (POST ?mount=&from=) when the caller knows where; else it is
  uploaded in one PUT. Then the manifest is PUT under its tag.

aiohttp is imported when the first client is made, not with this module: `podkit` commands
that pull nothing do not pay for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yarl import URL

from podkit.common.retry_after import parse_retry_after
from podkit.oci.auth_challenge import Challenge, basic, parse_challenge, token_from
from podkit.oci.hosts import Endpoint, Hosts
from podkit.oci.manifest import ACCEPT, Descriptor, sha256
from podkit.oci.reference import Reference

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("podkit.oci")

CHUNK = 1 << 20
MAX_REDIRECTS = 5
RETRIES = 4
FIRST_BACKOFF = 1.0
Progress = Callable[[int], None]  # bytes just received


class PullError(Exception):
    """A pull that cannot go on; the message is for the user (never holds a credential)."""


class NotFound(PullError):
    pass


class Unauthorized(PullError):
    pass


class RegistryClient:
    def __init__(
        self,
        hosts: Hosts,
        *,
        progress_timeout: float = 60.0,
        retries: int = RETRIES,
        first_backoff: float = FIRST_BACKOFF,
    ) -> None:
        import aiohttp

        self.hosts = hosts
        self.progress_timeout = progress_timeout
        self.retries = retries
        self.first_backoff = first_backoff
        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=progress_timeout),
            headers={"User-Agent": "podkit"},
            auto_decompress=False,  # blobs are hashed as stored
        )
        self._auth: dict[tuple[str, str], tuple[str, float]] = {}  # (host, scope) -> header, until
        self._basic: dict[str, str] = {}  # host -> Basic header, once a challenge asked for it
        self._plain: set[str] = set()  # loopback hosts that answered only plain HTTP
        self._ssl: dict[str, ssl.SSLContext | bool] = {}

    async def close(self) -> None:
        await self._session.close()

    # -- the API -----------------------------------------------------------------------------

    async def manifest(self, ref: Reference, target: str) -> tuple[bytes, str | None, str]:
        """(body, Content-Type, digest) of the manifest or index `target` (a tag or digest)."""

        async def get(end: Endpoint, base: str) -> tuple[bytes, str | None, str]:
            url = f"{base}/{ref.path}/manifests/{target}"
            async with await self._request(end, ref, url, {"Accept": ACCEPT}) as resp:
                await self._raise_for(resp, ref, f"manifest {target}")
                body = await resp.read()
                digest = sha256(body)
                claimed = resp.headers.get("Docker-Content-Digest")
                if target.startswith("sha256:") and digest != target:
                    raise PullError(f"{ref}: manifest {target} from {end.host} has digest {digest}")
                if claimed and claimed.startswith("sha256:") and claimed != digest:
                    raise PullError(f"{ref}: manifest from {end.host} does not match its digest")
                return body, resp.headers.get("Content-Type"), digest

        return await self._on_endpoints(ref, get)

    async def blob(self, ref: Reference, desc: Descriptor, limit: int = 16 << 20) -> bytes:
        """A small blob (a config), checked against its digest."""

        async def get(end: Endpoint, base: str) -> bytes:
            url = f"{base}/{ref.path}/blobs/{desc.digest}"
            async with await self._request(end, ref, url, {}) as resp:
                await self._raise_for(resp, ref, f"blob {desc.digest}")
                body = await resp.content.read(limit + 1)
            if len(body) > limit or sha256(body) != desc.digest:
                raise PullError(
                    f"{ref}: blob {desc.digest} from {end.host} does not match its digest"
                )
            return body

        return await self._on_endpoints(ref, get)

    async def download(
        self, ref: Reference, desc: Descriptor, path: Path, progress: Progress | None = None
    ) -> None:
        """Stream the blob into `path`, resuming what it already holds; checked at the end."""

        async def get(end: Endpoint, base: str) -> None:
            await self._download_from(end, base, ref, desc, path, progress)

        await self._on_endpoints(ref, get)

    async def push_blob(
        self, ref: Reference, data: bytes, digest: str, mount_from: str | None = None
    ) -> str:
        """Put a blob in the repository: "exists", "mounted" or "uploaded"."""

        async def put(end: Endpoint, base: str) -> str:
            blobs = f"{base}/{ref.path}/blobs"
            async with await self._request(end, ref, f"{blobs}/{digest}", {}, "HEAD") as resp:
                if resp.status == 200:
                    return "exists"
            start = f"{blobs}/uploads/"
            if mount_from:
                start += f"?mount={digest}&from={mount_from}"
            async with await self._request(end, ref, start, {}, "POST") as resp:
                if resp.status == 201:
                    return "mounted"
                await self._raise_for(resp, ref, f"blob upload {digest}")
                location = str(resp.url.join(URL(resp.headers.get("Location", ""))))
            url = URL(location).update_query({"digest": digest})
            headers = {"Content-Type": "application/octet-stream"}
            async with await self._request(end, ref, str(url), headers, "PUT", data) as resp:
                await self._raise_for(resp, ref, f"blob {digest}")
            return "uploaded"

        return str(await self._on_registry(ref, put))

    async def push_manifest(self, ref: Reference, tag: str, body: bytes, media_type: str) -> str:
        """PUT a manifest (or index) under `tag`; its digest, as the registry says it."""

        async def put(end: Endpoint, base: str) -> str:
            url = f"{base}/{ref.path}/manifests/{tag}"
            headers = {"Content-Type": media_type}
            async with await self._request(end, ref, url, headers, "PUT", body) as resp:
                await self._raise_for(resp, ref, f"manifest {tag}")
                return resp.headers.get("Docker-Content-Digest") or sha256(body)

        return str(await self._on_registry(ref, put))

    # -- endpoints, retries ------------------------------------------------------------------

    async def _on_registry(self, ref: Reference, call: Callable[[Endpoint, str], Any]) -> Any:
        """`call` on the registry itself: a push never goes to a mirror."""
        return await self._with_fallback(self.hosts.endpoints(ref.domain)[-1], call)

    async def _on_endpoints(self, ref: Reference, call: Callable[[Endpoint, str], Any]) -> Any:
        """`call` on each endpoint in turn until one works; the last error if none does."""
        ends = self.hosts.endpoints(ref.domain)
        error: PullError | None = None
        for end in ends:
            try:
                return await self._with_fallback(end, call)
            except Unauthorized:
                raise  # the credentials are wrong: another endpoint will not fix them
            except PullError as exc:
                error = exc
                if len(ends) > 1:
                    log.info(
                        "registry endpoint failed", extra={"endpoint": end.base, "error": str(exc)}
                    )
        assert error is not None
        raise error

    async def _with_fallback(self, end: Endpoint, call: Callable[[Endpoint, str], Any]) -> Any:
        if end.fallback and end.host in self._plain:
            return await call(end, end.fallback)
        try:
            return await call(end, end.base)
        except _TlsFailed:
            if not end.fallback:
                raise PullError(f"{end.host}: TLS handshake failed") from None
            self._plain.add(end.host)
            return await call(end, end.fallback)

    async def _request(
        self,
        end: Endpoint,
        ref: Reference,
        url: str,
        headers: dict[str, str],
        method: str = "GET",
        data: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        """A request with auth, retries and (GET) redirects; the caller reads and releases the
        answer. Anything but GET and HEAD asks for push rights."""
        reading = method in ("GET", "HEAD")
        scope = f"repository:{ref.path}:{'pull' if reading else 'pull,push'}"
        delay = self.first_backoff
        authenticated = False
        attempt = 0
        while True:
            attempt += 1
            sent = dict(headers)
            auth = self._auth_header(end.host, scope)
            if auth:
                sent["Authorization"] = auth
            try:
                resp = await self._send(end, method, url, sent, data)
            except _TlsFailed:
                raise
            except (self._aiohttp.ClientError, OSError) as exc:
                # Nobody there (refused, no such host) is said at once, as containerd says it:
                # the kubelet's backoff tries again. A dropped connection is tried again here.
                refused = isinstance(exc, self._aiohttp.ClientConnectorError)
                if attempt > self.retries or refused:
                    raise PullError(f"{end.host}: {_describe(exc)}") from None
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if resp.status == 401 and not authenticated:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                resp.release()
                authenticated = True
                if challenge is not None and await self._answer(end, ref, challenge, scope):
                    continue
                raise Unauthorized(f"{ref}: {end.host} asks for credentials (401): none given")
            if (resp.status == 429 or resp.status >= 500) and attempt <= self.retries:
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                resp.release()
                await asyncio.sleep(min(wait if wait is not None else delay, 300.0))
                delay *= 2
                continue
            return resp

    async def _send(
        self, end: Endpoint, method: str, url: str, headers: dict[str, str], data: bytes | None
    ) -> aiohttp.ClientResponse:
        """One request; a GET's redirects followed (the Location of an upload is the caller's)."""
        host = _host(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = await self._session.request(
                    method, url, headers=headers, data=data, allow_redirects=False,
                    ssl=self._ssl_for(end),
                )  # fmt: skip
            except self._aiohttp.ClientConnectorCertificateError as exc:
                raise PullError(
                    f"{end.host}: TLS certificate not trusted ({exc.certificate_error}); give "
                    f"its CA as configs.{end.host}.tls.ca_file in the registries file"
                ) from None
            except (self._aiohttp.ClientSSLError, ssl.SSLError) as exc:
                raise _TlsFailed(str(exc)) from None
            except self._aiohttp.ClientConnectorError as exc:
                if url.startswith("https://") and isinstance(exc.os_error, ssl.SSLError):
                    raise _TlsFailed(str(exc)) from None
                raise
            location = resp.headers.get("Location")
            if method != "GET" or resp.status not in (301, 302, 303, 307, 308) or not location:
                return resp
            resp.release()
            url = str(resp.url.join(URL(location)))
            if _host(url) != host:  # blob storage elsewhere: the registry's credentials stay
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                host = _host(url)
        raise PullError(f"{end.host}: more than {MAX_REDIRECTS} redirects")

    def _ssl_for(self, end: Endpoint) -> ssl.SSLContext | bool:
        if end.host not in self._ssl:
            tls = self.hosts.tls(end.host)
            if tls is None:
                self._ssl[end.host] = True
            else:
                ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
                if tls.cert_file:
                    ctx.load_cert_chain(tls.cert_file, tls.key_file)
                if tls.insecure_skip_verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                self._ssl[end.host] = ctx
        return self._ssl[end.host]

    # -- auth --------------------------------------------------------------------------------

    def _auth_header(self, host: str, scope: str) -> str | None:
        cached = self._auth.get((host, scope))
        if cached and cached[1] > time.monotonic():
            return cached[0]
        return self._basic.get(host)

    async def _answer(
        self, end: Endpoint, ref: Reference, challenge: Challenge, scope: str
    ) -> bool:
        """Get what the challenge asks for; False when there is nothing to answer with."""
        creds = self.hosts.credentials(end.host, ref.domain)
        if challenge.scheme == "basic":
            if creds is None:
                return False
            self._basic[end.host] = basic(*creds)
            return True
        url = challenge.token_url(scope)
        if url is None:
            return False
        headers = {"Authorization": basic(*creds)} if creds else {}
        try:
            async with self._session.get(url, headers=headers, ssl=self._ssl_for(end)) as resp:
                answer = await resp.read()
                status = resp.status
        except (self._aiohttp.ClientError, OSError) as exc:
            raise PullError(f"{ref}: token service {_host(url)}: {_describe(exc)}") from None
        if status in (401, 403):
            what = "the credentials given" if creds else "anonymous access"
            raise Unauthorized(f"{ref}: token service {_host(url)} refused {what} ({status})")
        if status != 200:
            raise PullError(f"{ref}: token service {_host(url)} answered {status}")
        try:
            token, lifetime = token_from(answer)
        except ValueError as exc:
            raise PullError(f"{ref}: token service {_host(url)}: {exc}") from None
        # Renewed a little early: a token expiring between check and use is a spurious 401.
        self._auth[(end.host, scope)] = (f"Bearer {token}", time.monotonic() + lifetime * 0.9)
        return True

    # -- answers -----------------------------------------------------------------------------

    async def _raise_for(self, resp: aiohttp.ClientResponse, ref: Reference, what: str) -> None:
        if 200 <= resp.status < 300:
            return
        body = (await resp.content.read(2048)).decode("utf-8", "replace")
        detail = _registry_error(body) or f"HTTP {resp.status}"
        host = _host(str(resp.url))
        if resp.status == 404:
            raise NotFound(f"{ref}: {what} not found on {host}: {detail}")
        if resp.status in (401, 403):
            raise Unauthorized(f"{ref}: {host} refused access to {what} ({resp.status}): {detail}")
        raise PullError(f"{ref}: {what} from {host}: {detail}")

    async def _download_from(
        self,
        end: Endpoint,
        base: str,
        ref: Reference,
        desc: Descriptor,
        path: Path,
        progress: Progress | None,
    ) -> None:
        url = f"{base}/{ref.path}/blobs/{desc.digest}"
        stalls = 0
        hasher: Any = None  # of the file's first `hashed` bytes
        hashed = 0
        while True:
            have = path.stat().st_size if path.exists() else 0
            if have > desc.size:  # more than the blob: not ours
                path.unlink()
                have = 0
            if hasher is None or hashed != have:  # a file left by an earlier run: hash it once
                hasher, hashed = _prefix_hash(path, have), have
            if have == desc.size and desc.size:
                if "sha256:" + hasher.hexdigest() == desc.digest:
                    return
                path.unlink()
                continue
            headers = {"Range": f"bytes={have}-"} if have else {}
            async with await self._request(end, ref, url, headers) as resp:
                if resp.status == 416 and have:  # the range is past the end: start over
                    path.unlink()
                    continue
                await self._raise_for(resp, ref, f"blob {desc.digest}")
                if not (resp.status == 206 and _range_start(resp.headers) == have):
                    hasher, hashed, have = hashlib.sha256(), 0, 0  # the whole blob again
                try:
                    hashed += await self._stream(resp, path, have, hasher, progress)
                except TimeoutError:
                    raise PullError(
                        f"{ref}: no progress for {self.progress_timeout:g} s while downloading "
                        f"{desc.digest} from {end.host}: aborted"
                    ) from None
                except _Broken as broken:
                    hashed += broken.written
                    stalls += 1
                    if stalls > self.retries:
                        raise PullError(f"{ref}: {desc.digest}: {broken}") from None
                    continue  # the connection broke: go on from what arrived
            size = path.stat().st_size
            if size < desc.size and stalls <= self.retries:
                stalls += 1
                continue  # the answer ended early: ask for the rest
            if size != desc.size or "sha256:" + hasher.hexdigest() != desc.digest:
                path.unlink()
                raise PullError(
                    f"{ref}: blob {desc.digest} from {end.host} does not match its digest "
                    f"({size} of {desc.size} bytes): thrown away"
                )
            return

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        path: Path,
        offset: int,
        hasher: Any,
        progress: Progress | None,
    ) -> int:
        """Write the answer's body at `offset` (0: from scratch), hashing it; the bytes written.
        A broken connection raises _Broken with what was written before it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        got = 0
        try:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    _write_all(fd, chunk)
                    hasher.update(chunk)
                    got += len(chunk)
                    if progress:
                        progress(len(chunk))
            except TimeoutError:
                raise
            except (self._aiohttp.ClientError, OSError) as exc:
                raise _Broken(_describe(exc), got) from None
        finally:
            os.close(fd)
        return got


class _TlsFailed(Exception):
    pass


class _Broken(Exception):
    def __init__(self, message: str, written: int) -> None:
        super().__init__(message)
        self.written = written


def _prefix_hash(path: Path, size: int) -> Any:
    """sha256 state of the file's first `size` bytes."""
    h = hashlib.sha256()
    if size:
        with path.open("rb") as f:
            left = size
            while left and (chunk := f.read(min(CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
    return h


def _range_start(headers: Any) -> int | None:
    value = headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _registry_error(body: str) -> str:
    """The registry's own words: `{"errors": [{"code": ..., "message": ...}]}`."""
    import json

    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return body.strip()[:200]
    return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)[:300]


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
