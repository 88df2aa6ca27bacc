"""Image references as Docker, containerd and the kubelet read them (pure).

    reference  := name [":" tag] ["@" digest]
    name       := [domain "/"] path          path components: [a-z0-9]+ with . _ __ - inside
    domain     := host [":" port]            "localhost", or holding a "." or ":", or uppercase

Normalised the way `docker pull` and the kubelet do it (distribution's ParseNormalizedNamed):
`busybox` is `docker.io/library/busybox:latest`, `index.docker.io` is `docker.io`, a name
without a tag or digest gets `:latest`. A digest pins the content: with both, the digest is what
is pulled and the tag is kept only as a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
LEGACY_HUB = "index.docker.io"
DEFAULT_TAG = "latest"
MAX_NAME = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class InvalidReference(ValueError):
    """Not an image reference: the kubelet's InvalidImageName."""


@dataclass(frozen=True, slots=True)
class Reference:
    domain: str  # "docker.io", "127.0.0.1:5000"
    path: str  # "library/busybox"
    tag: str | None  # None only when a digest names the image
    digest: str | None  # "sha256:<hex>"

    @property
    def name(self) -> str:
        """domain/path: the repository, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """As `docker images` shows it: `busybox:1.36`, `127.0.0.1:5000/app:v1`."""
        text = self.name
        if self.domain == DOCKER_HUB:
            short = self.path.removeprefix("library/")
            text = short if "/" not in short else self.path
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """The normalised reference, or InvalidReference saying what is wrong with `text`."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {text!r}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(f"invalid digest {digest!r} in {text!r}")
        if digest.startswith("sha256:") and not _SHA256.fullmatch(digest):
            raise InvalidReference(f"invalid sha256 digest {digest!r}: 64 lowercase hex digits")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):  # a ":" after the last "/" starts a tag, not a port
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid tag {tag!r} in {text!r}")
    domain, path = split_domain(name)
    if not _DOMAIN.fullmatch(domain):
        raise InvalidReference(f"invalid registry host {domain!r} in {text!r}")
    if path != path.lower() and _PATH.fullmatch(path.lower()):
        raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
    if not _PATH.fullmatch(path):
        raise InvalidReference(f"invalid repository name {path!r} in {text!r}")
    if _HEX64.fullmatch(path.removeprefix("library/")) and domain == DOCKER_HUB:
        raise InvalidReference(
            f"invalid repository name {path!r}: cannot be a 64-character hexadecimal string"
        )
    if len(f"{domain}/{path}") > MAX_NAME:
        raise InvalidReference(f"repository name longer than {MAX_NAME} characters: {text!r}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def split_domain(name: str) -> tuple[str, str]:
    """(registry, path), as distribution's splitDockerDomain: the first component is a registry
    when it looks like a host (a "." or ":", "localhost", or uppercase letters)."""
    first, sep, remainder = name.partition("/")
    looks_like_host = "." in first or ":" in first or first == "localhost"
    is_host = sep and (looks_like_host or first != first.lower())
    if not is_host:
        domain, path = DOCKER_HUB, name
    else:
        domain, path = first, remainder
    if domain == LEGACY_HUB:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def is_loopback(domain: str) -> bool:
    """A registry on this machine (127.0.0.0/8, ::1, localhost): plain HTTP allowed, as Docker
    allows it."""
    host = domain.rsplit(":", 1)[0] if not domain.startswith("[") else domain[1:].split("]")[0]
    return host == "localhost" or host.startswith("127.") or host == "::1"
