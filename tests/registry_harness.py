"""Real OCI registries and real test images for podkit's image-pulling tests, with no internet.

Registries (`Registry`, `TokenServer`)
--------------------------------------
A `Registry` is Debian's `docker-registry` (distribution 2.8) run as a child process with a config
file of its own, written for that instance (`Registry.config_file`). Never the package's
/etc/docker/registry/config.yml: that one listens on `:5000`, i.e. on every interface, demands
htpasswd auth from a file the package owns and keeps its blobs in /var/lib/docker-registry, so a
test using it would expose a registry to the network and share state with the host and with every
other test run. Ours:

- `http.addr` is 127.0.0.1 and a port from `podkit_harness.free_port()` (outside the kernel's
  ephemeral range, so no outgoing connection grabs it between the pick and the bind); a start that
  still loses the port to someone else is retried on a new one;
- `storage.filesystem.rootdirectory` is under the instance's own directory, deletes are enabled
  (a test may delete a manifest or blob), upload purging is off (no background job mid-test);
- `log.accesslog` is on: distribution writes one combined-log-format line per request
  (gorilla/handlers) to its stdout, which goes to `access.log`: `access_entries()` parses it and
  `blob_gets()` counts the blob downloads a test caused. The application log (logrus, on stderr)
  goes to `registry.log`, and is quoted when the registry fails to start;
- `http.secret` is set (else every start logs a warning and makes one up); no debug server, no
  storage-driver health checks, no redis.

Readiness is polled: `GET /v2/` answering at all (200, or 401 in the auth modes), with a deadline.
`stop()` sends SIGTERM (SIGKILL after a deadline) to that one process and checks that nothing
listens on its port any more.

Modes (`Registry(..., auth=..., tls=...)`; each a module-scoped fixture in tests/oci/conftest.py):

- anonymous plain HTTP (`auth="none"`): no `auth` section at all;
- htpasswd Basic auth (`auth="htpasswd"`): `auth.htpasswd.{realm,path}` with a file of
  `user:hash` lines. distribution accepts only bcrypt hashes; there is no `htpasswd` (apache2-utils)
  nor Python `bcrypt` here and `openssl passwd` does no bcrypt, so the hash comes from libxcrypt
  (libcrypt.so.1, part of every Debian) through ctypes: `crypt_gensalt("$2b$", 4)` + `crypt()`,
  the library Python's deprecated `crypt` module wraps (gone in 3.13, hence ctypes). Cost 4, Go's
  minimum, because the registry checks the hash on every request;
- token auth (`auth="token"`): `auth.token.{realm,service,issuer,rootcertbundle}` pointing at a
  `TokenServer` run in-process by the test (a ThreadingHTTPServer on another free port). It speaks
  the Docker token protocol: `GET /token?service=...&scope=repository:NAME:pull,push[&account=...]`
  with optional Basic credentials, answering `{"token", "access_token", "expires_in",
  "issued_at"}`. The token is a JWT signed ES256 with a key whose certificate (issued by a test CA)
  is in the rootcertbundle together with that CA. distribution 2.8's `registry/auth/token`
  (`Token.VerifySigningKey`) finds the key from the JOSE header in this order: `x5c` (a chain it
  verifies against the bundle's certificates), `jwk`, or `kid` looked up among the bundle
  certificates' public keys by their *libtrust* key ID (base32 of the first 240 bits of the SHA-256
  of the DER SubjectPublicKeyInfo, in colon-separated groups of four). `TokenServer.header`
  chooses "x5c" (default: `[signing cert, CA]`) or "kid" (`libtrust_key_id`). It also checks `iss`
  == issuer, `aud` == service (a string in 2.8), `exp`/`nbf` with 60 s leeway, then the signature
  (ES256: raw r||s, 32 bytes each). The token server records every request (`TokenRequest`: the
  scopes, whether credentials came and were right, what it granted) and decides like a real one:
  pull is anonymous unless the repository is in `private_repos` (or `anonymous_pull` is off),
  push/delete/`*` and `registry:catalog:*` need the user's password; it grants what it may and
  leaves the rest out, so the registry answers 401 `insufficient_scope` on the rest; wrong
  credentials get a 401 from the token server itself;
- TLS (`tls=True`, combinable with any auth): `http.tls.{certificate,key}` with a certificate for
  `localhost` and 127.0.0.1 (IP SAN) issued by a test CA: `Registry.ca_file` is the CA's PEM and
  `Registry.cert_dir` a directory holding it as `ca.crt` (what skopeo's `--cert-dir` and
  containers' certs.d expect).

Images (`TestImages`, `OciImage`)
---------------------------------
Built without internet from `/bin/busybox` (busybox-static) with `umoci` into OCI image layouts,
each once per test session (tests/oci/conftest.py: the session-scoped `oci_images`), then pushed
to any registry with `Registry.push()` (`skopeo copy oci:LAYOUT:TAG docker://127.0.0.1:PORT/NAME`).
umoci's rootfs changes are `umoci unpack` -> edit the bundle's rootfs -> `umoci repack` (one new
layer: the diff against the unpacked mtree) -> `umoci unpack` again for the next layer (repacking
the same bundle twice would diff against the original image again, not stack).

- `busybox()`: one layer: /bin/busybox plus symlinks for its applets (sh, ls, cat, echo, id,
  sleep, env, pwd, ...: `BUSYBOX_APPLETS`), /etc/passwd and /etc/group with root, `app`
  (1000:1000) and nobody, /root, /home/app, /tmp (1777), /proc, /sys, /dev; Env PATH, Cmd ["sh"];
  the host's architecture.
- `layered()`: busybox's layer, then three more: (1) files of every kind (`LAYER1`: dirs, a
  hardlink pair, relative and absolute symlinks, setuid/setgid files, files owned by 1000,
  a 0600 file, an empty file); (2) a umoci repack that deletes a file and a directory (umoci
  writes the whiteouts `app/.wh.to-delete.txt` and `app/.wh.dir-to-delete`), chmods a file and
  adds one; (3) a hand-made tar added with `umoci raw add-layer` making `app/opaque` opaque
  (`app/opaque/.wh..wh..opq`) with one new file. (`umoci insert --opaque` would be the umoci way,
  but umoci 0.4.7's insert writes truncated tars: no padding, no end-of-archive blocks; and a
  repack after emptying a directory writes one whiteout per old entry, not an opaque marker.)
  Config: `LAYERED_CONFIG` (Entrypoint, Cmd, Env, WorkingDir, User "1000:1000");
  `layered_named_user()` is the same image with User "app". `LAYERED_EXPECTED`,
  `LAYERED_HARDLINKS` and `LAYERED_ABSENT` say what the unpacked rootfs must hold.
- `multiarch()`: an OCI image index (tag `multiarch`) of two manifests with `platform`s: the busybox
  manifest for the host's architecture, and a one-file stub (/PLATFORM) whose config says the other
  of linux/amd64 and linux/arm64. The index blob is written into the layout by hand and referenced
  from its index.json; `push()` copies it with `skopeo copy --all`.
- `busybox_zstd()`: busybox recompressed to zstd by `skopeo copy --dest-compress-format zstd`
  oci:->oci: (layer media type `application/vnd.oci.image.layer.v1.tar+zstd`), pushed as it is.
  Pushing busybox straight to a registry with that option does not work when the registry already
  holds the gzip layer: skopeo reuses the existing blob and writes a gzip manifest.

`Registry.push(image, "name:tag", format=None|"v2s2")` returns a `PushedImage`: the reference,
manifest digest and media type, raw manifest, config and layer digests and media types (and for an
index its child manifests by platform), read back from the registry with `skopeo inspect --raw`.

skopeo always runs with a policy file of ours (accept anything) and an empty auth file
(`REGISTRY_AUTH_FILE`), credentials only from `--creds` options. One thing outside the test's
directories remains: as root, skopeo keeps its blob-info cache in /var/lib/containers/cache.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import hashlib
import http.client
import io
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from podkit_harness import free_port, wait_for
from proxy_harness import issue_cert, make_ca

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

AuthMode = Literal["none", "htpasswd", "token"]


def require_tools() -> None:
    """Fail with a clear message when a Debian package the registry tests need is missing."""
    missing = [t for t in (REGISTRY_BIN, "skopeo", "umoci", "/bin/busybox") if not shutil.which(t)]
    if missing:
        raise RuntimeError(
            f"missing {missing}: install docker-registry skopeo umoci busybox-static (make debs)"
        )


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure raise with its command line and output."""
    kw.setdefault("timeout", 120)
    proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{args} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def _umoci(*args: str) -> None:
    _run(["umoci", *args])


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- skopeo ---------------------------------------------------------------------------------------


class Skopeo:
    """skopeo with a policy and an (empty) auth file of our own under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.authfile = workdir / "auth.json"
        self.authfile.write_text("{}")

    def raw(self, *args: str) -> bytes:
        """skopeo ARGS' stdout as bytes (a manifest exactly as served); raises on failure."""
        env = {**os.environ, "REGISTRY_AUTH_FILE": str(self.authfile)}
        cmd = ["skopeo", "--policy", str(self.policy), *args]
        proc = subprocess.run(
            cmd, capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr.decode()}")
        return proc.stdout

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """skopeo ARGS; raises on failure unless check=False (a test expecting one)."""
        env = {**os.environ, "REGISTRY_AUTH_FILE": str(self.authfile)}
        cmd = ["skopeo", "--policy", str(self.policy), *args]
        if check:
            return _run(cmd, env=env)
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
        )


# -- bcrypt for htpasswd --------------------------------------------------------------------------


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """A `$2b$` bcrypt hash from libxcrypt (what distribution's htpasswd auth accepts)."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    setting = lib.crypt_gensalt(b"$2b$", cost, None, 0)
    if not setting:
        raise RuntimeError("libxcrypt made no bcrypt salt")
    hashed = lib.crypt(password.encode(), setting)
    if not hashed or not hashed.startswith(b"$2b$"):
        raise RuntimeError(f"libxcrypt made no bcrypt hash: {hashed!r}")
    return hashed.decode()


# -- token server ---------------------------------------------------------------------------------


def libtrust_key_id(public_key: Any) -> str:
    """docker/libtrust's key ID of a public key: what distribution matches a JWT `kid` against."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


@dataclasses.dataclass
class TokenRequest:
    """One request the token server got, and what it answered."""

    method: str
    path: str
    service: str | None
    scopes: list[str]
    account: str | None
    username: str | None  # from Basic credentials, if any came
    credentials_given: bool
    authenticated: bool  # the credentials were right
    status: int
    granted: list[dict[str, Any]]  # the token's `access` claim


class TokenServer:
    """A Docker registry token server for `Registry(auth="token")`, run in this process."""

    def __init__(
        self,
        workdir: Path,
        *,
        username: str = "podkit",
        password: str | None = None,
        private_repos: Iterable[str] = (),
        anonymous_pull: bool = True,
        expires_in: int = 300,
        header: Literal["x5c", "kid"] = "x5c",
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self.private_repos: set[str] = set(private_repos)
        self.anonymous_pull = anonymous_pull
        self.expires_in = expires_in
        self.header = header
        self.service = "podkit-test-registry"
        self.issuer = "podkit-test-token-issuer"
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        ca = make_ca(workdir, "podkit token CA")
        cert_path, key_path = issue_cert(workdir, ca, ["podkit-token-signer"], "token-signer")
        self.key: Any = serialization.load_pem_private_key(key_path.read_bytes(), None)
        self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.ca_cert = ca[1]
        self.key_id = libtrust_key_id(self.key.public_key())
        # The registry's rootcertbundle: the CA (root of the x5c chain) and the signing cert
        # itself (whose public key is what a `kid` is looked up among).
        self.root_bundle = workdir / "token-rootcertbundle.pem"
        self.root_bundle.write_bytes(
            self.cert.public_bytes(serialization.Encoding.PEM)
            + self.ca_cert.public_bytes(serialization.Encoding.PEM)
        )
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def credentials(self) -> str:
        return f"{self.username}:{self.password}"

    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                # The OAuth2 form of the protocol: not offered, and a 404 tells a client to fall
                # back to GET (distribution's spec). Recorded so a test can see it was tried.
                owner._record(
                    TokenRequest("POST", self.path, None, [], None, None, False, False, 404, [])
                )
                self.send_error(404)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None

    def clear(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self.requests.clear()

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(url.query)
        service = query.get("service", [None])[0]
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        account = query.get("account", [None])[0]
        username, password = self._basic(h.headers.get("Authorization"))
        given = username is not None
        authenticated = given and username == self.username and password == self.password

        def answer(status: int, body: dict[str, Any], granted: list[dict[str, Any]]) -> None:
            self._record(
                TokenRequest(
                    method="GET",
                    path=h.path,
                    service=service,
                    scopes=scopes,
                    account=account,
                    username=username,
                    credentials_given=given,
                    authenticated=authenticated,
                    status=status,
                    granted=granted,
                )
            )
            data = json.dumps(body).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            if status == 401:
                h.send_header("WWW-Authenticate", 'Basic realm="podkit test token server"')
            h.end_headers()
            h.wfile.write(data)

        if url.path != "/token":
            answer(404, {"errors": [{"code": "NOT_FOUND"}]}, [])
        elif service != self.service:
            answer(400, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]}, [])
        elif given and not authenticated:
            answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}, [])
        else:
            granted = self.grant(scopes, authenticated)
            token = self.issue(granted, subject=(username or "") if authenticated else "")
            answer(
                200,
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": self.expires_in,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                granted,
            )

    @staticmethod
    def _basic(header: str | None) -> tuple[str | None, str | None]:
        if not header or not header.lower().startswith("basic "):
            return None, None
        try:
            user, _, pw = base64.b64decode(header[6:].strip()).decode().partition(":")
        except ValueError:
            return "", ""
        return user, pw

    def grant(self, scopes: list[str], authenticated: bool) -> list[dict[str, Any]]:
        """The `access` claim for these scopes: what the user may do of what was asked."""
        access: list[dict[str, Any]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            kind = kind.split("(")[0]  # "repository(plugin)" is a repository too
            allowed: list[str] = []
            for action in actions.split(","):
                if kind == "repository" and action == "pull":
                    public = self.anonymous_pull and name not in self.private_repos
                    ok = authenticated or public
                else:  # push, delete, *, and registry:catalog:*
                    ok = authenticated and kind in ("repository", "registry")
                if ok and action not in allowed:
                    allowed.append(action)
            if allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def issue(self, access: list[dict[str, Any]], subject: str = "", **claims: Any) -> str:
        """A JWT as the registry wants it (`claims` override the standard ones, for tests that
        need a bad or expired token)."""
        now = int(time.time())
        header: dict[str, Any] = {"typ": "JWT", "alg": "ES256"}
        if self.header == "x5c":
            header["x5c"] = [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in (self.cert, self.ca_cert)
            ]
        else:
            header["kid"] = self.key_id
        body = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
            **claims,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, body)
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# -- the registry ---------------------------------------------------------------------------------

# gorilla/handlers' combined log format, as distribution writes it to stdout:
# 127.0.0.1 - - [05/Dec/2026:11:06:03 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>\S+) (?P<uri>\S+) (?P<proto>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?\s*$'
)
_BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")


@dataclasses.dataclass(frozen=True)
class AccessEntry:
    """One line of the registry's access log."""

    remote: str
    user: str
    time: str
    method: str
    uri: str
    protocol: str
    status: int
    size: int
    referer: str
    user_agent: str

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]

    @property
    def blob(self) -> tuple[str, str] | None:
        """(repository, digest) when this is a request for a blob."""
        m = _BLOB_PATH.match(self.path)
        return (m["repo"], m["digest"]) if m else None


def parse_access_line(line: str) -> AccessEntry | None:
    m = _ACCESS_LINE.match(line)
    if not m:
        return None
    return AccessEntry(
        remote=m["remote"],
        user=m["user"],
        time=m["time"],
        method=m["method"],
        uri=m["uri"],
        protocol=m["proto"],
        status=int(m["status"]),
        size=0 if m["size"] == "-" else int(m["size"]),
        referer=m["referer"] or "",
        user_agent=m["agent"] or "",
    )


@dataclasses.dataclass(frozen=True)
class PushedImage:
    """An image (or index) as the registry serves it, read back after a push."""

    registry: str  # "127.0.0.1:PORT"
    repository: str
    tag: str  # "" when inspected by digest
    digest: str  # sha256 of the manifest bytes the registry serves
    media_type: str
    raw: bytes
    manifest: dict[str, Any]

    @property
    def reference(self) -> str:
        """127.0.0.1:PORT/NAME:TAG (NAME@DIGEST when inspected by digest)."""
        return f"{self.registry}/{self.repository}:{self.tag}" if self.tag else self.by_digest

    @property
    def by_digest(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"

    @property
    def is_index(self) -> bool:
        return "manifests" in self.manifest

    @property
    def config_digest(self) -> str | None:
        return self.manifest.get("config", {}).get("digest")

    @property
    def layer_digests(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest.get("layers", [])]

    @property
    def layer_media_types(self) -> list[str]:
        return [layer["mediaType"] for layer in self.manifest.get("layers", [])]

    @property
    def platforms(self) -> dict[str, str]:
        """An index's child manifests: {"linux/amd64": digest, ...}."""
        return {
            f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
            for m in self.manifest.get("manifests", [])
            if "platform" in m
        }


class Registry:
    """distribution's registry on 127.0.0.1, with its own config and storage under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        auth: AuthMode = "none",
        tls: bool = False,
        token_server: TokenServer | None = None,
        username: str = "podkit",
        password: str | None = None,
    ) -> None:
        require_tools()
        if (auth == "token") != (token_server is not None):
            raise ValueError("auth='token' goes with a token_server, and only it")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.tls = tls
        self.token_server = token_server
        self.username: str | None = None
        self.password: str | None = None
        if auth == "htpasswd":
            self.username, self.password = username, password or secrets.token_urlsafe(12)
        elif token_server is not None:
            self.username, self.password = token_server.username, token_server.password
        self.storage = workdir / "storage"
        self.config_file = workdir / "config.yml"
        self.access_log = workdir / "access.log"
        self.app_log = workdir / "registry.log"
        self.ca_file: Path | None = None
        self.cert_dir: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.skopeo = Skopeo(workdir / "skopeo")
        self._opener = _opener(None)

    # -- addresses and client options --

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def credentials(self) -> str | None:
        """The user's `user:password` for skopeo/curl; None for an anonymous registry."""
        return f"{self.username}:{self.password}" if self.username else None

    def ref(self, name: str) -> str:
        """The full reference of NAME[:TAG] here: 127.0.0.1:PORT/NAME[:TAG]."""
        return f"{self.host}/{name}"

    def tls_args(self, side: Literal["src", "dest", ""] = "") -> list[str]:
        """skopeo's TLS options: verify against our CA, or plain HTTP."""
        prefix = f"--{side}-" if side else "--"
        if self.tls:
            return [f"{prefix}cert-dir", str(self.cert_dir), f"{prefix}tls-verify=true"]
        return [f"{prefix}tls-verify=false"]

    def creds_args(
        self, side: Literal["src", "dest", ""] = "", anonymous: bool = False
    ) -> list[str]:
        prefix = f"--{side}-" if side else "--"
        if self.credentials is None or anonymous:
            return [f"{prefix}no-creds"]
        return [f"{prefix}creds", self.credentials]

    def curl_args(self, with_credentials: bool = True) -> list[str]:
        """curl options to reach this registry (CA, Basic credentials for htpasswd)."""
        args = ["--silent", "--show-error"]
        if self.ca_file is not None:
            args += ["--cacert", str(self.ca_file)]
        if with_credentials and self.auth == "htpasswd":
            args += ["--user", str(self.credentials)]
        return args

    # -- lifecycle --

    def start(self) -> Registry:
        if self.tls:
            self._make_certs()
        if self.auth == "htpasswd":
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(f"{self.username}:{bcrypt_hash(str(self.password))}\n")
        for _attempt in range(3):
            self.port = free_port()
            self.config_file.write_text(yaml.safe_dump(self.config()))
            if self._spawn():
                return self
        raise RuntimeError(f"registry could not bind a port:\n{self.app_log.read_text()}")

    def config(self) -> dict[str, Any]:
        """The registry's config.yml for this instance (see the module docstring)."""
        http: dict[str, Any] = {
            "addr": self.host,
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            http["tls"] = {
                "certificate": str(self.workdir / "registry.crt"),
                "key": str(self.workdir / "registry.key"),
                "minimumtls": "tls1.2",
            }
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.auth == "htpasswd":
            cfg["auth"] = {
                "htpasswd": {
                    "realm": "podkit-test-registry",
                    "path": str(self.workdir / "htpasswd"),
                }
            }
        elif self.token_server is not None:
            ts = self.token_server
            cfg["auth"] = {
                "token": {
                    "realm": ts.realm,
                    "service": ts.service,
                    "issuer": ts.issuer,
                    "rootcertbundle": str(ts.root_bundle),
                }
            }
        return cfg

    def _make_certs(self) -> None:
        ca = make_ca(self.workdir, "podkit registry CA")
        issue_cert(self.workdir, ca, ["localhost", "127.0.0.1"], "registry")
        self.ca_file = ca[2]
        self.cert_dir = self.workdir / "certs.d"
        self.cert_dir.mkdir(exist_ok=True)
        shutil.copy(self.ca_file, self.cert_dir / "ca.crt")
        self._opener = _opener(ssl.create_default_context(cafile=str(self.ca_file)))

    def _spawn(self) -> bool:
        """Start the process and wait until it answers; False if it lost its port."""
        log_start = self.app_log.stat().st_size if self.app_log.exists() else 0
        with open(self.access_log, "ab") as out, open(self.app_log, "ab") as err:
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_file)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,  # a ^C at the terminal is for pytest, not for it
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.app_log.read_bytes()[log_start:].decode(errors="replace")
                self.proc = None
                if "address already in use" in log:
                    return False
                raise RuntimeError(f"registry exited at start:\n{log}")
            try:
                status, _, _ = self.request("/v2/", timeout=1.0)
                if status in (200, 401):
                    return True
            except (OSError, http.client.HTTPException):
                pass  # not listening yet, or not speaking HTTP yet
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"registry not answering after {START_TIMEOUT}s:\n"
            f"{self.app_log.read_text(errors='replace')}"
        )

    def stop(self) -> None:
        """SIGTERM (SIGKILL after STOP_TIMEOUT) to the registry, then check its port is free."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wait_for(f"nothing listening on {self.host}", lambda: not _listening(self.port), 5.0)

    def restart(self) -> None:
        """Start again on the same port (a test that had it down)."""
        if not self._spawn():
            raise RuntimeError(f"registry lost its port {self.port} while it was down")

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP --

    def request(
        self,
        path: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a request to the registry; an error status is an answer."""
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()

    # -- the access log --

    def sync_log(self, timeout: float = 5.0) -> None:
        """Make sure the lines of requests answered before now are in the access log.

        A request is logged as its handler returns, which can be (the last bytes of the body
        still in the server's buffer) just before the client has them all; so make a request of our
        own and wait for its line."""
        marker = uuid.uuid4().hex
        self.request(f"/v2/?podkit-log-sync={marker}")
        wait_for(
            f"the log-sync request in {self.access_log}",
            lambda: marker in self.access_log.read_text(errors="replace"),
            timeout,
        )

    def access_entries(self, sync: bool = True) -> list[AccessEntry]:
        if sync and self.proc is not None:
            self.sync_log()
        lines = self.access_log.read_text(errors="replace").splitlines()
        return [e for e in map(parse_access_line, lines) if e is not None]

    def mark(self) -> int:
        """A position in the access log: pass it as `since=` to count only what came after."""
        return len(self.access_entries())

    def blob_gets(
        self,
        digest: str | None = None,
        *,
        repository: str | None = None,
        since: int = 0,
        successful_only: bool = True,
    ) -> int:
        """How many GETs of blobs (of this digest / repository) the registry answered, from the
        `since` mark on. HEADs do not count; nor, with successful_only, non-2xx answers (the 401
        before a client authenticates, a 404)."""
        count = 0
        for entry in self.access_entries()[since:]:
            blob = entry.blob
            if entry.method != "GET" or blob is None:
                continue
            if successful_only and entry.status // 100 != 2:
                continue
            if (repository is None or blob[0] == repository) and digest in (None, blob[1]):
                count += 1
        return count

    # -- images --

    def push(self, image: OciImage, name: str, *, format: str | None = None) -> PushedImage:
        """`skopeo copy` the layout's image (an index with --all) to NAME[:TAG] here.

        format: None keeps the OCI media types; "v2s2" converts to Docker's."""
        args = ["copy", "--quiet"]
        if image.is_index:
            args.append("--all")
        if format is not None:
            args += ["--format", format]
        args += self.tls_args("dest") + self.creds_args("dest")
        self.skopeo.run(*args, image.oci_ref, f"docker://{self.ref(_with_tag(name))}")
        return self.inspect(name)

    def inspect_raw(self, name: str, anonymous: bool = False) -> bytes:
        """The manifest bytes the registry serves for NAME[:TAG] or NAME@DIGEST."""
        ref = self.ref(_with_tag(name))
        creds = self.creds_args(anonymous=anonymous)
        return self.skopeo.raw("inspect", "--raw", *self.tls_args(), *creds, f"docker://{ref}")

    def inspect(self, name: str, anonymous: bool = False) -> PushedImage:
        """What the registry serves for NAME[:TAG] or NAME@DIGEST (tag "" for the latter)."""
        name = _with_tag(name)
        raw = self.inspect_raw(name, anonymous=anonymous)
        manifest = json.loads(raw)
        if "@" in name:
            repository, tag = name.split("@")[0], ""
        else:
            repository, _, tag = name.rpartition(":")
        return PushedImage(
            registry=self.host,
            repository=repository,
            tag=tag,
            digest=_sha256(raw),
            media_type=manifest.get("mediaType")
            or (OCI_INDEX if "manifests" in manifest else OCI_MANIFEST),
            raw=raw,
            manifest=manifest,
        )


def _opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    """urllib without proxies from the environment (the registry is on loopback)."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )


def _with_tag(name: str) -> str:
    """NAME -> NAME:latest; NAME:TAG and NAME@DIGEST as they are."""
    return name if "@" in name or ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- images ---------------------------------------------------------------------------------------

# The applets linked into busybox()'s /bin (a space-separated list).
BUSYBOX_APPLETS = (
    "sh ash ls cat echo id sleep env pwd true false mkdir rm rmdir touch wc head tail grep sed ps"
    " kill hostname date stat test printf readlink ln cp mv chmod chown uname whoami find sort tr"
    " cut nc wget tee xargs du df which"
)
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\napp:x:1000:\nnobody:x:65534:\n"
BUSYBOX_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

LAYERED_CONFIG: dict[str, Any] = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ['echo "$GREETING"; id; pwd'],
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello from layered"],
    "WorkingDir": "/app",
    "User": "1000:1000",
}
LAYERED_NAMED_USER = "app"  # layered_named_user()'s User: 1000:1000 by the image's /etc/passwd


@dataclasses.dataclass(frozen=True)
class Entry:
    """A filesystem entry of a test layer (and of the expected unpacked rootfs)."""

    path: str  # relative to the rootfs, no leading /
    kind: Literal["dir", "file", "symlink", "hardlink"]
    mode: int = 0o644  # permission bits, with setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""  # a symlink's target; a hardlink's other path

    def create(self, root: Path) -> None:
        p = root / self.path
        if self.kind == "dir":
            p.mkdir(parents=True, exist_ok=True)
        elif self.kind == "file":
            p.write_bytes(self.data)
        elif self.kind == "symlink":
            p.symlink_to(self.target)
            os.lchown(p, self.uid, self.gid)
            return
        else:
            os.link(root / self.target, p)
            return
        os.chown(p, self.uid, self.gid)
        os.chmod(p, self.mode)  # after chown, which clears setuid/setgid


# Layer 1 of layered(), on top of busybox's layer.
LAYER1: tuple[Entry, ...] = (
    Entry("app", "dir", 0o755),
    Entry("app/hello.txt", "file", 0o644, data=b"hello from layer 1\n"),
    Entry("app/hello-hardlink.txt", "hardlink", target="app/hello.txt"),
    Entry("app/hello-symlink", "symlink", 0o777, target="hello.txt"),
    Entry("app/passwd-link", "symlink", 0o777, target="/etc/passwd"),  # absolute: to the rootfs's
    Entry("app/run.sh", "file", 0o755, data=b"#!/bin/sh\necho run.sh ran\n"),
    Entry("app/empty", "file", 0o644),
    Entry("app/to-delete.txt", "file", 0o644, data=b"deleted by layer 2\n"),
    Entry("app/dir-to-delete", "dir", 0o755),
    Entry("app/dir-to-delete/inner.txt", "file", 0o644, data=b"deleted with its dir\n"),
    Entry("app/opaque", "dir", 0o755, 1000, 1000),
    Entry("app/opaque/old.txt", "file", 0o644, 1000, 1000, data=b"hidden by layer 3\n"),
    Entry("app/opaque/sub", "dir", 0o755, 1000, 1000),
    Entry("app/opaque/sub/nested.txt", "file", 0o644, 1000, 1000, data=b"hidden too\n"),
    Entry("app/data", "dir", 0o750, 1000, 1000),
    Entry("app/data/secret.txt", "file", 0o600, 1000, 1000, data=b"only for app\n"),
    Entry("usr", "dir", 0o755),
    Entry("usr/local", "dir", 0o755),
    Entry("usr/local/bin", "dir", 0o755),
    Entry("usr/local/bin/setuid-tool", "file", 0o4755, data=b"#!/bin/sh\nid\n"),
    Entry("usr/local/bin/setgid-tool", "file", 0o2755, 0, 1000, data=b"#!/bin/sh\nid -g\n"),
)
# Layer 2 (umoci repack): these deleted (umoci writes `.wh.` whiteouts for them), these added.
LAYER2_DELETED = ("app/to-delete.txt", "app/dir-to-delete")
LAYER2_CHMOD = {"app/empty": 0o600}
LAYER2: tuple[Entry, ...] = (Entry("app/added.txt", "file", 0o644, data=b"added by layer 2\n"),)
# Layer 3 (a hand-made tar, `umoci raw add-layer`): app/opaque made opaque, with one new file.
LAYER3: tuple[Entry, ...] = (
    Entry("app/opaque", "dir", 0o755, 1000, 1000),
    Entry("app/opaque/new.txt", "file", 0o644, 1000, 1000, data=b"the opaque dir's only file\n"),
)


def _expected_layered() -> dict[str, Entry]:
    tree = {e.path: e for e in LAYER1}
    for path in LAYER2_DELETED:
        tree = {p: e for p, e in tree.items() if p != path and not p.startswith(path + "/")}
    for path, mode in LAYER2_CHMOD.items():
        tree[path] = dataclasses.replace(tree[path], mode=mode)
    tree.update({e.path: e for e in LAYER2})
    tree = {p: e for p, e in tree.items() if not p.startswith("app/opaque/")}
    tree.update({e.path: e for e in LAYER3})
    return tree


# What layered()'s unpacked rootfs holds beyond busybox's files (hardlinks as "hardlink" entries
# whose target is the other path: the two must be one inode), and what it must not hold.
LAYERED_EXPECTED: dict[str, Entry] = _expected_layered()
LAYERED_HARDLINKS: tuple[tuple[str, str], ...] = (("app/hello.txt", "app/hello-hardlink.txt"),)
LAYERED_ABSENT: tuple[str, ...] = (
    "app/to-delete.txt",
    "app/dir-to-delete",
    "app/opaque/old.txt",
    "app/opaque/sub",
)


def host_arch() -> str:
    """The OCI architecture name of this machine."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@dataclasses.dataclass(frozen=True)
class OciImage:
    """A tagged image (or index) in an OCI image layout directory."""

    layout: Path
    tag: str

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"

    @property
    def descriptor(self) -> dict[str, Any]:
        index = json.loads((self.layout / "index.json").read_text())
        for d in index["manifests"]:
            if d.get("annotations", {}).get(REF_NAME) == self.tag:
                return dict(d)
        raise KeyError(f"no {self.tag!r} in {self.layout}/index.json")

    @property
    def digest(self) -> str:
        return str(self.descriptor["digest"])

    @property
    def media_type(self) -> str:
        return str(self.descriptor["mediaType"])

    @property
    def is_index(self) -> bool:
        return self.media_type == OCI_INDEX

    def blob_path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        return self.layout / "blobs" / algo / hexdigest

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def manifest(self) -> dict[str, Any]:
        """The manifest (an index for multiarch())."""
        return dict(json.loads(self.blob(self.digest)))

    def config(self) -> dict[str, Any]:
        return dict(json.loads(self.blob(self.manifest()["config"]["digest"])))

    @property
    def layer_digests(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest()["layers"]]

    @property
    def layer_media_types(self) -> list[str]:
        return [layer["mediaType"] for layer in self.manifest()["layers"]]

    def layer_tar(self, layer: int | str) -> bytes:
        """A layer's uncompressed tar, by index or digest."""
        digest = self.layer_digests[layer] if isinstance(layer, int) else layer
        media = dict(zip(self.layer_digests, self.layer_media_types, strict=True))[digest]
        data = self.blob(digest)
        if media.endswith("+gzip") or media.endswith(".tar.gzip"):
            import gzip

            return gzip.decompress(data)
        if media.endswith("+zstd"):
            try:
                import zstandard

                return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))
            except ImportError:
                return subprocess.run(
                    ["zstd", "-dc"], input=data, capture_output=True, check=True
                ).stdout
        return data

    def layer_members(self, layer: int | str) -> list[tarfile.TarInfo]:
        with tarfile.open(fileobj=io.BytesIO(self.layer_tar(layer)), mode="r:") as tar:
            return tar.getmembers()

    def layer_listing(self, layer: int | str) -> str:
        """`tar -tvf` of a layer blob (GNU tar finds the compression itself)."""
        digest = self.layer_digests[layer] if isinstance(layer, int) else layer
        return _run(["tar", "-tvf", str(self.blob_path(digest))]).stdout


class TestImages:
    """Builds the test images once each, on first use, as OCI layouts under `workdir`."""

    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path) -> None:
        require_tools()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.skopeo = Skopeo(workdir / "skopeo")
        self._built: dict[str, OciImage] = {}
        self._lock = threading.RLock()

    def _once(self, key: str, build: Callable[[], OciImage]) -> OciImage:
        with self._lock:
            if key not in self._built:
                self._built[key] = build()
            return self._built[key]

    # -- the images --

    def busybox(self) -> OciImage:
        return self._once("busybox", self._build_busybox)

    def layered(self) -> OciImage:
        return self._once("layered", self._build_layered)

    def layered_named_user(self) -> OciImage:
        self.layered()
        return self._built["layered-named-user"]

    def multiarch(self) -> OciImage:
        return self._once("multiarch", self._build_multiarch)

    def busybox_zstd(self) -> OciImage:
        return self._once("busybox-zstd", self._build_busybox_zstd)

    def busybox_stop_signal(self) -> OciImage:
        """busybox whose config says StopSignal SIGUSR1 (a new tag in busybox's layout)."""

        def build() -> OciImage:
            base = self.busybox()
            tag = "stop-signal"
            _umoci("config", "--image", f"{base.layout}:{base.tag}", "--tag", tag,
                   "--config.stopsignal", "SIGUSR1")  # fmt: skip
            return OciImage(base.layout, tag)

        return self._once("busybox-stop-signal", build)

    # -- building --

    def _build_busybox(self) -> OciImage:
        layout = self.workdir / "busybox"
        _umoci("init", "--layout", str(layout))
        _umoci("new", "--image", f"{layout}:busybox")
        with _unpacked(layout, "busybox", self.workdir / "bundle-busybox") as rootfs:
            for d, mode in (
                ("bin", 0o755),
                ("dev", 0o755),
                ("etc", 0o755),
                ("home", 0o755),
                ("proc", 0o555),
                ("root", 0o700),
                ("sys", 0o555),
                ("tmp", 0o1777),
                ("usr/bin", 0o755),
            ):
                (rootfs / d).mkdir(parents=True, exist_ok=True)
                os.chmod(rootfs / d, mode)
            (rootfs / "home/app").mkdir()
            os.chown(rootfs / "home/app", 1000, 1000)
            shutil.copy2("/bin/busybox", rootfs / "bin/busybox")
            for applet in BUSYBOX_APPLETS.split():
                (rootfs / "bin" / applet).symlink_to("busybox")
            (rootfs / "etc/passwd").write_text(PASSWD)
            (rootfs / "etc/group").write_text(GROUP)
        config = ["--config.cmd", "sh"] + [a for e in BUSYBOX_ENV for a in ("--config.env", e)]
        _umoci("config", "--image", f"{layout}:busybox", *config)
        _umoci("gc", "--layout", str(layout))
        return OciImage(layout, "busybox")

    def _build_layered(self) -> OciImage:
        base = self.busybox()
        layout = self.workdir / "layered"
        shutil.copytree(base.layout, layout)
        image = f"{layout}:layered"
        with _unpacked(layout, "busybox", self.workdir / "bundle-layer1", repack=image) as rootfs:
            for entry in LAYER1:
                entry.create(rootfs)
        with _unpacked(layout, "layered", self.workdir / "bundle-layer2") as rootfs:
            for path in LAYER2_DELETED:
                target = rootfs / path
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            for path, mode in LAYER2_CHMOD.items():
                os.chmod(rootfs / path, mode)
            for entry in LAYER2:
                entry.create(rootfs)
        layer3 = self.workdir / "layer3.tar"
        layer3.write_bytes(_opaque_layer_tar(LAYER3, "app/opaque"))
        _umoci("raw", "add-layer", "--image", image, str(layer3))
        cfg = LAYERED_CONFIG
        args = ["--clear=config.env", "--clear=config.entrypoint", "--clear=config.cmd"]
        args += [a for e in cfg["Env"] for a in ("--config.env", e)]
        args += [a for e in cfg["Entrypoint"] for a in ("--config.entrypoint", e)]
        args += [a for e in cfg["Cmd"] for a in ("--config.cmd", e)]
        args += ["--config.workingdir", cfg["WorkingDir"], "--config.user", cfg["User"]]
        _umoci("config", "--image", image, *args)
        _umoci(
            "config",
            "--image",
            image,
            "--tag",
            "layered-named-user",
            "--config.user",
            LAYERED_NAMED_USER,
        )
        _umoci("rm", "--image", f"{layout}:busybox")
        _umoci("gc", "--layout", str(layout))
        self._built["layered-named-user"] = OciImage(layout, "layered-named-user")
        return OciImage(layout, "layered")

    def _build_multiarch(self) -> OciImage:
        base = self.busybox()
        layout = self.workdir / "multiarch"
        shutil.copytree(base.layout, layout)
        other = "arm64" if host_arch() != "arm64" else "amd64"
        stub = f"{layout}:stub-{other}"
        _umoci("new", "--image", stub)
        with _unpacked(layout, f"stub-{other}", self.workdir / "bundle-stub") as rootfs:
            (rootfs / "PLATFORM").write_text(f"linux/{other}\n")
        _umoci(
            "config",
            "--image",
            stub,
            "--architecture",
            other,
            "--os",
            "linux",
            "--config.cmd",
            "/PLATFORM",
        )
        _umoci("gc", "--layout", str(layout))
        entries = [
            (OciImage(layout, "busybox"), host_arch()),
            (OciImage(layout, f"stub-{other}"), other),
        ]
        entries.sort(key=lambda e: e[1])  # amd64 first
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": img.media_type,
                    "digest": img.digest,
                    "size": img.descriptor["size"],
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for img, arch in entries
            ],
        }
        raw = json.dumps(index, separators=(",", ":")).encode()
        digest = _sha256(raw)
        (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(raw)
        top = json.loads((layout / "index.json").read_text())
        top["manifests"].append(
            {
                "mediaType": OCI_INDEX,
                "digest": digest,
                "size": len(raw),
                "annotations": {REF_NAME: "multiarch"},
            }
        )
        (layout / "index.json").write_text(json.dumps(top))
        return OciImage(layout, "multiarch")

    def _build_busybox_zstd(self) -> OciImage:
        base = self.busybox()
        layout = self.workdir / "busybox-zstd"
        ref = f"oci:{layout}:busybox-zstd"
        self.skopeo.run("copy", "--quiet", "--dest-compress-format", "zstd", base.oci_ref, ref)
        image = OciImage(layout, "busybox-zstd")
        if image.layer_media_types != [OCI_LAYER_ZSTD]:
            raise RuntimeError(f"skopeo did not recompress to zstd: {image.manifest()}")
        return image


class _unpacked:  # noqa: N801 (used like a function: `with _unpacked(...) as rootfs`)
    """`umoci unpack` LAYOUT:TAG into a fresh bundle; on leaving, `umoci repack` it (as TAG, or
    as `repack`) and remove the bundle."""

    def __init__(self, layout: Path, tag: str, bundle: Path, repack: str | None = None) -> None:
        self.image = f"{layout}:{tag}"
        self.repack = repack or self.image
        self.bundle = bundle

    def __enter__(self) -> Path:
        shutil.rmtree(self.bundle, ignore_errors=True)
        _umoci("unpack", "--image", self.image, str(self.bundle))
        return self.bundle / "rootfs"

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                _umoci("repack", "--image", self.repack, str(self.bundle))
        finally:
            shutil.rmtree(self.bundle, ignore_errors=True)


def _opaque_layer_tar(entries: Iterable[Entry], opaque_dir: str) -> bytes:
    """An uncompressed layer tar of `entries` (dirs and files), with `opaque_dir` made opaque:
    its `.wh..wh..opq` marker right after its own entry, as docker and containerd write it."""
    buf = io.BytesIO()
    mtime = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, mtime
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            if e.path == opaque_dir:
                marker = tarfile.TarInfo(f"{opaque_dir}/.wh..wh..opq")
                marker.mtime = mtime
                tar.addfile(marker, io.BytesIO(b""))
    return buf.getvalue()
