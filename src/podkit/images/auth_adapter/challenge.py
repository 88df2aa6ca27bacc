"""What an API's 401 says about the bearer token (RFC 6750 3, RFC 9110 11.6.1): pure.

    WWW-Authenticate: Bearer realm="api", error="invalid_token", error_description="expired"

A new token can help when the Bearer challenge has error="invalid_token" or no error at all (a
401 without WWW-Authenticate is taken the same way: many APIs leave it out). It cannot when the
error is another one (insufficient_scope comes with 403; invalid_request is the request's
fault), or when the API asks for another scheme only (Basic, say).
"""

from __future__ import annotations

import re

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*(?:,|$)')
_SCHEME = re.compile(rf"\s*,?\s*({_TOKEN})(?:\s+|$|(?=,))")
_TOKEN68 = re.compile(r"\s*[A-Za-z0-9\-._~+/]+=*\s*(?:,|$)")


def challenges(value: str) -> list[tuple[str, dict[str, str]]]:
    """The challenges of a WWW-Authenticate value: (scheme lower-cased, auth-params with
    lower-cased names and unquoted values). Unparsable rest is ignored."""
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(value):
        m = _SCHEME.match(value, pos)
        if m is None:
            break
        scheme = m[1].lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(value):
            p = _PARAM.match(value, pos)
            if p is None:
                t = _TOKEN68.match(value, pos) if not params else None
                if t is not None and "=" not in value[pos : t.end()].rstrip("=, \t"):
                    pos = t.end()
                break
            raw = p[2]
            params[p[1].lower()] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw[:1] == '"' else raw
            pos = p.end()
        out.append((scheme, params))
    return out


def new_token_may_help(www_authenticate: bytes | None) -> bool:
    """Whether a 401 with this WWW-Authenticate value (None: absent) blames the token itself."""
    if www_authenticate is None:
        return True
    found = challenges(www_authenticate.decode("latin-1"))
    if not found:
        return True  # unparsable: as if absent
    for scheme, params in found:
        if scheme == "bearer":
            return params.get("error", "invalid_token") == "invalid_token"
    return False
