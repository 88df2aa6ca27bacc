"""Credentials that a cluster's requests carry upstream, from a provider outside the engine (the
auth-adapter's OAuth2 tokens).

For a cluster with a provider, the session drops the client's own Authorization field, asks the
provider for a credential before each request (waiting when none is at hand, answering the
provider's refusal itself), and after a 401 asks whether a new credential may help: then it
sends the request once more, when its body can be replayed.
"""

from __future__ import annotations

from typing import Protocol


class Credential:
    """Header lines to add to a request (CRLF-terminated), and the provider's handle on what it
    issued (to recognise it in `rejected`). Its repr never shows the header: it holds a secret."""

    __slots__ = ("header", "handle")

    def __init__(self, header: bytes, handle: object) -> None:
        self.header = header
        self.handle = handle

    def __repr__(self) -> str:
        return "Credential([REDACTED])"


class Refused(Exception):
    """No credential can be had now: the proxy answers the request itself with this."""

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes = b"application/json",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


class CredentialProvider(Protocol):
    def current(self) -> Credential | None:
        """A valid credential at hand, without waiting; None when one must be fetched."""

    async def fetch(self) -> Credential:
        """A credential, waiting for one when needed; raises Refused when none can be had."""

    def rejected(self, credential: Credential, status: int, fields: bytes) -> bool:
        """The upstream answered `status` (401) with these response fields to a request that
        carried `credential`: forget it if the answer says so, and say whether the request may
        be sent once more with a new one."""
