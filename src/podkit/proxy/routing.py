"""Route matching, with no I/O: a request's method, host, path and headers -> the first route whose
match holds (Envoy's route table, flattened: hosts sit on each route).

Everything is bytes, as the parser hands it over, so the hot path decodes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from podkit.proxy import h1
from podkit.proxy.config import HeaderMatch, Redirect, RetryPolicy, Route


class _HeaderRule:
    __slots__ = ("name", "exact", "prefix", "regex", "present", "invert")

    def __init__(self, rule: HeaderMatch) -> None:
        self.name = rule.name.lower().encode()
        self.exact = rule.exact.encode() if rule.exact is not None else None
        self.prefix = rule.prefix.encode() if rule.prefix is not None else None
        self.regex = re.compile(rule.regex.encode()) if rule.regex is not None else None
        self.present = rule.present
        self.invert = rule.invert

    def holds(self, fields: bytes) -> bool:
        value = h1.field_value(fields, self.name)
        if self.present is not None:
            ok = (value is not None) == self.present
        elif value is None:
            ok = False
        elif self.exact is not None:
            ok = value == self.exact
        elif self.prefix is not None:
            ok = value.startswith(self.prefix)
        else:
            assert self.regex is not None
            ok = self.regex.fullmatch(value) is not None
        return ok != self.invert


@dataclass(eq=False, slots=True)
class CompiledRoute:
    name: str
    cluster: str | None
    timeout: float  # for the whole request, retries included (inf: none)
    try_timeout: float  # for each try: the per-try timeout, else the route's (inf: none)
    retry: RetryPolicy
    retry_statuses: frozenset[int]  # 5xx / gateway-error / listed codes, whatever retry_on says
    retry_connect: bool  # connect-failure in retry_on
    retry_reset: bool  # reset in retry_on
    rewrite: tuple[bytes, bytes] | None  # (matched prefix, replacement)
    host_rewrite: bytes | None
    forward_proxy_authorization: bool
    direct: tuple[int, bytes, bytes] | None  # (status, body, content type)
    redirect: Redirect | None
    # match
    hosts_exact: frozenset[bytes]
    hosts_suffix: tuple[bytes, ...]
    any_host: bool
    path: bytes | None
    prefix: bytes | None
    regex: re.Pattern[bytes] | None
    methods: frozenset[bytes]
    headers: tuple[_HeaderRule, ...]

    def matches(self, method: bytes, host: bytes, path: bytes, fields: bytes) -> bool:
        if (
            not self.any_host
            and host not in self.hosts_exact
            and not any(host.endswith(s) for s in self.hosts_suffix)
        ):
            return False
        if self.prefix is not None:
            if not path.startswith(self.prefix):
                return False
        elif self.path is not None:
            if path != self.path:
                return False
        elif self.regex is not None and self.regex.fullmatch(path) is None:
            return False
        if self.methods and method not in self.methods:
            return False
        return all(rule.holds(fields) for rule in self.headers)

    def rewrite_path(self, path: bytes) -> bytes:
        if self.rewrite is None:
            return path
        prefix, replacement = self.rewrite
        return replacement + path[len(prefix) :]


def _retry_statuses(policy: RetryPolicy) -> frozenset[int]:
    codes: set[int] = set()
    if "5xx" in policy.retry_on:
        codes.update(range(500, 600))
    if "gateway-error" in policy.retry_on:
        codes.update((502, 503, 504))
    if "retriable-status-codes" in policy.retry_on:
        codes.update(policy.retriable_status_codes)
    return frozenset(codes)


def compile_route(route: Route, index: int) -> CompiledRoute:
    m = route.match
    hosts = [h.lower() for h in m.hosts]
    direct = None
    if route.direct_response is not None:
        d = route.direct_response
        direct = (d.status, d.body.encode(), d.content_type.encode())
    prefix = m.prefix if m.prefix is not None or m.path is not None or m.regex is not None else "/"
    return CompiledRoute(
        name=route.name or f"route{index}",
        cluster=route.cluster,
        timeout=route.timeout or math.inf,
        try_timeout=min(route.retry.per_try_timeout or math.inf, route.timeout or math.inf),
        retry=route.retry,
        retry_statuses=_retry_statuses(route.retry),
        retry_connect="connect-failure" in route.retry.retry_on,
        retry_reset="reset" in route.retry.retry_on,
        rewrite=(m.prefix.encode(), route.rewrite_prefix.encode())
        if route.rewrite_prefix is not None and m.prefix is not None
        else None,
        host_rewrite=route.host_rewrite.encode() if route.host_rewrite is not None else None,
        forward_proxy_authorization=route.forward_proxy_authorization,
        direct=direct,
        redirect=route.redirect,
        hosts_exact=frozenset(h.encode() for h in hosts if not h.startswith("*")),
        hosts_suffix=tuple(h[1:].encode() for h in hosts if h.startswith("*.")),
        any_host=not hosts or "*" in hosts,
        path=m.path.encode() if m.path is not None else None,
        prefix=prefix.encode() if prefix is not None else None,
        regex=re.compile(m.regex.encode()) if m.regex is not None else None,
        methods=frozenset(x.upper().encode() for x in m.methods),
        headers=tuple(_HeaderRule(h) for h in m.headers),
    )


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = [compile_route(r, i) for i, r in enumerate(routes)]
        # A first route that matches everything: the common sidecar case, with no matching.
        first = self.routes[0] if self.routes else None
        self.only = first if first is not None and _matches_all(first) else None

    def match(self, method: bytes, host: bytes, path: bytes, fields: bytes) -> CompiledRoute | None:
        """First route that holds; `host` is lower-case without its port, `fields` the raw
        header lines."""
        for route in self.routes:
            if route.matches(method, host, path, fields):
                return route
        return None


def _matches_all(route: CompiledRoute) -> bool:
    return (
        route.any_host
        and route.prefix == b"/"
        and not route.methods
        and not route.headers
        and route.path is None
        and route.regex is None
    )


def redirect_location(
    redirect: Redirect, route: CompiledRoute, scheme: bytes, host: bytes, path: bytes, query: bytes
) -> bytes:
    """The Location of a redirect: each part from the rule when it gives one, else the request's."""
    new_scheme = redirect.scheme.encode() if redirect.scheme else scheme
    new_host = redirect.host.encode() if redirect.host else host
    if redirect.port is not None:
        new_host = _strip_port(new_host) + b":%d" % redirect.port
    elif redirect.scheme and redirect.scheme.encode() != scheme and not redirect.host:
        new_host = _strip_port(new_host)  # http -> https drops the old scheme's port
    if redirect.path is not None:
        new_path = redirect.path.encode()
    elif redirect.prefix_rewrite is not None and route.prefix is not None:
        new_path = redirect.prefix_rewrite.encode() + path[len(route.prefix) :]
    else:
        new_path = path
    location = new_scheme + b"://" + new_host + new_path
    if query and not redirect.strip_query:
        location += b"?" + query
    return location


def _strip_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.rsplit(b":", 1)[0] if b":" in host else host
