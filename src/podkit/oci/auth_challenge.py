"""Registry authentication, the parts without I/O: `WWW-Authenticate` challenges, token
answers and `Retry-After` (RFC 7235, the Docker token protocol, RFC 9110)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

import orjson

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lowercase
    params: dict[str, str] = field(default_factory=dict)

    def token_url(self, scope: str) -> str | None:
        """Where to get a token for `scope` (Bearer), or None without a realm."""
        realm = self.params.get("realm")
        if not realm:
            return None
        query = {"service": self.params["service"]} if "service" in self.params else {}
        scopes = self.params.get("scope") or scope
        if scopes:
            query["scope"] = scopes
        sep = "&" if "?" in realm else "?"
        return realm + (sep + urlencode(query) if query else "")


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a `WWW-Authenticate` header we can answer (Bearer or Basic)."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params: dict[str, str] = {}
    for m in _PARAM.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(scheme, params)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def token_from(answer: bytes) -> tuple[str, float]:
    """(token, seconds it lives) from a token endpoint's JSON; ValueError if it has none."""
    doc = orjson.loads(answer)
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise ValueError("the token answer holds no token")
    expires = doc.get("expires_in")
    lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else 60.0
    return token, lifetime
