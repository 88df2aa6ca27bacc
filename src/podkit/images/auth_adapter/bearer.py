"""OAuth2 bearer tokens as the proxy engine's credentials (proxy/credentials.py): a token
source's token in the Authorization field, a JSON 503 when there is none, and a new token after
a 401 that blames the old one."""

from __future__ import annotations

import math

import orjson

from podkit.images.auth_adapter.challenge import new_token_may_help
from podkit.images.auth_adapter.token_cache import Token
from podkit.images.auth_adapter.token_source import NoToken, TokenSource
from podkit.proxy import h1
from podkit.proxy.credentials import Credential, Refused


class BearerCredentials:
    def __init__(self, upstream: str, source: TokenSource, *, retry_on_401: bool = True) -> None:
        self.upstream = upstream
        self.source = source
        self.retry_on_401 = retry_on_401
        self._last: tuple[Token, Credential] | None = None

    def _credential(self, token: Token) -> Credential:
        last = self._last
        if last is not None and last[0] is token:
            return last[1]
        # The token endpoint's answer was checked to be header-safe (token_request.py).
        header = b"authorization: " + token.authorization.encode("ascii") + b"\r\n"
        credential = Credential(header, token)
        self._last = (token, credential)
        return credential

    def current(self) -> Credential | None:
        token = self.source.cached()
        return self._credential(token) if token is not None else None

    async def fetch(self) -> Credential:
        try:
            token = await self.source.token()
        except NoToken as exc:
            raise Refused(
                503, no_token_body(self.upstream, exc), headers=_retry_after(exc)
            ) from None
        return self._credential(token)

    def rejected(self, credential: Credential, status: int, fields: bytes) -> bool:
        if status != 401 or not new_token_may_help(h1.field_value(fields, b"www-authenticate")):
            return False
        assert isinstance(credential.handle, Token)
        self.source.invalidate(credential.handle)
        return self.retry_on_401


def no_token_body(upstream: str, exc: NoToken) -> bytes:
    """What the app gets instead of a response: why there is no token (never a secret)."""
    doc: dict[str, object] = {"error": "no_token", "upstream": upstream, "reason": exc.reason}
    if exc.retry_in is not None:
        doc["retry_in_seconds"] = round(exc.retry_in, 3)
    return orjson.dumps(doc) + b"\n"


def _retry_after(exc: NoToken) -> list[tuple[bytes, bytes]]:
    if exc.retry_in is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(exc.retry_in))).encode())]
