"""The proxy's config: listeners -> routes -> clusters -> endpoints (Envoy's model), one YAML file.

Every knob has a default, a unit and a reason (HAProxy's manual is the model). Durations are
seconds, given as a number (`2.5`) or with a unit (`250ms`, `10s`, `5m`, `1h`).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from podkit.common.config import parse_hostport
from podkit.common.config_section import Duration, PositiveDuration, Section


def _check_address(value: str) -> str:
    parse_hostport(value)
    return value


Address = Annotated[str, BeforeValidator(lambda v: _check_address(str(v)))]


def _one_of(model: Section, fields: tuple[str, ...], *, required: bool = True) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) > 1:
        raise ValueError(f"give only one of {', '.join(fields)} (got {', '.join(given)})")
    if required and not given:
        raise ValueError(f"give one of {', '.join(fields)}")


# ---------------------------------------------------------------------------------------------
# Listeners


class Certificate(Section):
    cert_file: Path = Field(description="PEM certificate chain")
    key_file: Path = Field(description="PEM private key")
    server_names: list[str] = Field(
        default_factory=list,
        description="SNI names this certificate answers (exact or *.example.com); the first "
        "certificate with none is the default for clients that send no or an unknown name",
    )


class ListenerTls(Section):
    certificates: list[Certificate] = Field(min_length=1)
    min_version: Literal["1.2", "1.3"] = "1.2"
    alpn: list[str] = Field(default_factory=lambda: ["http/1.1"])
    client_ca_file: Path | None = Field(
        default=None, description="verify client certificates against these CAs (mTLS)"
    )
    require_client_cert: bool = Field(
        default=True, description="with client_ca_file: refuse clients without a certificate"
    )


class HeaderMatch(Section):
    name: str
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None
    invert: bool = False

    @model_validator(mode="after")
    def _one_rule(self) -> HeaderMatch:
        _one_of(self, ("exact", "prefix", "regex", "present"))
        if self.regex is not None:
            _compile(self.regex)
        return self


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


class RouteMatch(Section):
    hosts: list[str] = Field(
        default_factory=list,
        description="Host header values, exact or with a leading wildcard (*.example.com); "
        "empty = any host. The port and letter case are ignored.",
    )
    path: str | None = Field(default=None, description="exact path")
    prefix: str | None = Field(default=None, description="path prefix (the default is /)")
    regex: str | None = Field(default=None, description="regular expression the whole path matches")
    methods: list[str] = Field(default_factory=list, description="empty = any method")
    headers: list[HeaderMatch] = Field(default_factory=list, description="all must match")

    @model_validator(mode="after")
    def _one_path_rule(self) -> RouteMatch:
        _one_of(self, ("path", "prefix", "regex"), required=False)
        if self.regex is not None:
            _compile(self.regex)
        for rule in (self.path, self.prefix):
            if rule is not None and not rule.startswith("/"):
                raise ValueError(f"a path must start with / (got {rule!r})")
        return self


RetryOn = Literal["connect-failure", "reset", "5xx", "gateway-error", "retriable-status-codes"]
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("connect-failure", "reset")


class RetryPolicy(Section):
    """Retries happen only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE)."""

    retries: int = Field(default=2, ge=0, le=10, description="attempts after the first")
    retry_on: list[RetryOn] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    retriable_status_codes: list[int] = Field(default_factory=list)
    per_try_timeout: Duration | None = Field(default=None, description="none = the route timeout")


class DirectResponse(Section):
    status: int = Field(ge=200, le=599)
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"


class Redirect(Section):
    status: Literal[301, 302, 303, 307, 308] = 301
    scheme: Literal["http", "https"] | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str | None = Field(default=None, description="replace the whole path")
    prefix_rewrite: str | None = Field(default=None, description="replace the matched prefix")
    strip_query: bool = False


class Route(Section):
    name: str | None = None
    match: RouteMatch = Field(default_factory=RouteMatch)
    cluster: str | None = None
    direct_response: DirectResponse | None = None
    redirect: Redirect | None = None
    rewrite_prefix: str | None = Field(
        default=None, description="replace the matched prefix (match.prefix) before forwarding"
    )
    host_rewrite: str | None = Field(
        default=None,
        description="the Host sent upstream (Envoy's host_rewrite_literal); none = the client's",
    )
    timeout: Duration = Field(
        default=15.0, description="whole response from the upstream (Envoy's default); 0 = none"
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    forward_proxy_authorization: bool = Field(
        default=False,
        description="send the client's Proxy-Authorization upstream; it is for this proxy, so "
        "it is dropped unless the upstream is a proxy that wants it",
    )

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        _one_of(self, ("cluster", "direct_response", "redirect"))
        if self.rewrite_prefix is not None and self.match.prefix is None:
            raise ValueError("rewrite_prefix needs match.prefix")
        return self


class Limits(Section):
    max_request_line: int = Field(
        default=8192, ge=64, description="bytes of method + target + version; longer -> 414"
    )
    max_header_bytes: int = Field(
        default=65536, ge=256, description="bytes of all request headers; more -> 431"
    )
    max_headers: int = Field(default=100, ge=1, description="request header count; more -> 431")


class ListenerTimeouts(Section):
    header_read: PositiveDuration = Field(
        default=10.0, description="to receive a whole request head (slowloris); then 408"
    )
    body_idle: PositiveDuration = Field(
        default=30.0, description="longest silence while a request body is being received"
    )
    keepalive: PositiveDuration = Field(
        default=60.0, description="an idle client connection is closed after this"
    )
    body: PositiveDuration = Field(
        default=60.0,
        description="to receive a whole request body, however steadily it trickles (body_idle "
        "bounds each silence); then 408",
    )


class Listener(Section):
    name: str
    listen: Address
    protocol: Literal["http", "https", "tcp"] = "http"
    tls: ListenerTls | None = None
    routes: list[Route] = Field(default_factory=list, description="first match wins")
    cluster: str | None = Field(default=None, description="tcp listeners: where to connect")
    trusted_cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list,
        description="clients whose X-Forwarded-For/-Proto/-Host are kept and appended to; "
        "from anyone else they are replaced",
    )
    forwarded_headers: bool = Field(
        default=True,
        description="add X-Forwarded-For/-Proto/-Host; an egress proxy to an outside API may "
        "leave them out (the client's own are dropped either way)",
    )
    strip_untrusted_forwarded: bool = Field(
        default=True,
        description="drop Forwarded and X-Real-IP from clients outside trusted_cidrs, as their "
        "X-Forwarded-* are: a backend must not take a client's word for its own address",
    )
    default_host_for_http_10: str | None = Field(
        default=None,
        description="Host given to an HTTP/1.0 request that has none (Envoy's option); without "
        "it such a request is sent on as HTTP/1.0",
    )
    limits: Limits = Field(default_factory=Limits)
    timeouts: ListenerTimeouts = Field(default_factory=ListenerTimeouts)

    @model_validator(mode="after")
    def _fits_protocol(self) -> Listener:
        if self.protocol == "https" and self.tls is None:
            raise ValueError("protocol https needs tls.certificates")
        if self.protocol == "http" and self.tls is not None:
            raise ValueError("protocol http takes no tls (use https)")
        if self.protocol == "tcp":
            if self.cluster is None:
                raise ValueError("protocol tcp needs cluster")
            if self.routes:
                raise ValueError("protocol tcp takes no routes (use cluster)")
        elif not self.routes:
            raise ValueError(f"protocol {self.protocol} needs at least one route")
        elif self.cluster is not None:
            raise ValueError(f"protocol {self.protocol} routes by routes[].cluster, not cluster")
        return self


# ---------------------------------------------------------------------------------------------
# Clusters


class Endpoint(Section):
    address: Address = Field(description="HOST:PORT; a DNS name is re-resolved periodically")
    weight: int = Field(default=1, ge=1, le=1000)


class HashOn(Section):
    header: str | None = None
    cookie: str | None = None
    source_ip: bool | None = None

    @model_validator(mode="after")
    def _one_key(self) -> HashOn:
        _one_of(self, ("header", "cookie", "source_ip"))
        return self


class UpstreamTls(Section):
    ca_file: Path | None = Field(default=None, description="none = the system's CAs")
    server_name: str | None = Field(default=None, description="SNI and name checked; none = host")
    verify: bool = True
    cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    key_file: Path | None = None


class ClusterTimeouts(Section):
    connect: PositiveDuration = 5.0
    idle: PositiveDuration = Field(
        default=4.0,
        description="an idle pooled connection is closed after this; keep it below the "
        "backend's keep-alive timeout (Node and Apache: 5 s) so the backend never closes "
        "a connection just as a request is sent on it",
    )


class CircuitBreaker(Section):
    """Envoy's defaults; over a limit the request gets 503 at once (no queueing forever)."""

    max_connections: int = Field(default=1024, ge=1)
    max_pending_requests: int = Field(default=1024, ge=0)
    max_requests: int = Field(default=1024, ge=1)


_STATUS_RANGE = re.compile(r"(\d{3})(?:-(\d{3}))?")


def parse_status_range(item: str) -> tuple[int, int]:
    """'200' -> (200, 200), '200-399' -> (200, 399); a ValueError naming the item otherwise."""
    m = _STATUS_RANGE.fullmatch(item.strip())
    if m is not None:
        low = int(m.group(1))
        high = int(m.group(2) or low)
        if 100 <= low <= high <= 599:
            return low, high
    raise ValueError(
        f"invalid status range {item!r}: expected NNN or NNN-NNN within 100-599, low <= high"
    )


def _status_items(value: Any) -> Any:
    # YAML gives `[200, 204]` as ints; accept them as "200", "204".
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def _printable_ascii(value: str) -> bool:
    return value.isascii() and all(c.isprintable() and not c.isspace() for c in value)


class HealthCheck(Section):
    """Active checks (HAProxy's `check`, Envoy's health_checks): every endpoint is probed every
    interval; a host leaves the rotation after unhealthy_threshold failures in a row and comes
    back after healthy_threshold successes in a row. New endpoints start healthy."""

    type: Literal["http", "tcp"] = Field(
        default="http",
        description="http: GET path and check the status; tcp: a connection that opens is a pass",
    )
    path: str = Field(default="/", description="http: the request target, starting with /")
    host: str | None = Field(
        default=None,
        description="http: the Host header; none = the endpoint's configured name and port, "
        "so name-based virtual hosts answer the check as they answer requests",
    )
    expected_statuses: Annotated[list[str], BeforeValidator(_status_items)] = Field(
        default_factory=lambda: ["200-399"],
        min_length=1,
        description="http: statuses that pass, each NNN or NNN-NNN (HAProxy's default: "
        "2xx and 3xx pass)",
    )
    interval: PositiveDuration = Field(
        default=5.0,
        description="seconds between check rounds; a dead host is out after about interval x "
        "unhealthy_threshold (15 s), outlier detection catches it sooner from real traffic",
    )
    timeout: PositiveDuration = Field(
        default=1.0,
        description="seconds for one check (connect, request and status line); at most interval, "
        "so rounds never overlap",
    )
    jitter: Duration = Field(
        default=0.0,
        description="up to this many extra seconds, random, added to each interval so many "
        "proxies do not probe a backend in lockstep",
    )
    healthy_threshold: int = Field(
        default=2, ge=1, description="passes in a row that bring an unhealthy host back (rise)"
    )
    unhealthy_threshold: int = Field(
        default=3,
        ge=1,
        description="failures in a row that take a healthy host out (fall), so one lost "
        "probe does not",
    )

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"a path must start with / (got {value!r})")
        if not _printable_ascii(value):
            raise ValueError(f"a path takes no spaces, control or non-ASCII characters: {value!r}")
        return value

    @field_validator("host")
    @classmethod
    def _host_is_token(cls, value: str | None) -> str | None:
        if value is not None and not (value and _printable_ascii(value)):
            raise ValueError(f"a Host header must be non-empty ASCII without spaces: {value!r}")
        return value

    @field_validator("expected_statuses")
    @classmethod
    def _status_ranges(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_status_range(item)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HealthCheck:
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g} s) must not exceed interval ({self.interval:g} s)"
            )
        if self.type == "tcp":
            http_only = sorted({"path", "host", "expected_statuses"} & self.model_fields_set)
            if http_only:
                raise ValueError(f"{', '.join(http_only)}: only used by type http")
        return self


class OutlierDetection(Section):
    """Passive checks (Envoy's outlier_detection): a host that keeps failing real requests is
    ejected for a while, before any active check would notice."""

    consecutive_5xx: int = Field(
        default=5,
        ge=0,
        description="5xx responses and connect failures in a row that eject a host; 0 = off",
    )
    consecutive_connect_failures: int = Field(
        default=5,
        ge=0,
        description="connect failures in a row that eject a host (a 5xx resets it); 0 = off",
    )
    base_ejection: PositiveDuration = Field(
        default=30.0,
        description="seconds of the first ejection; each further ejection lasts one base "
        "longer, so a flapping host stays out longer",
    )
    max_ejection: PositiveDuration = Field(
        default=300.0, description="seconds an ejection never exceeds"
    )
    max_ejection_percent: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="percent of the cluster's hosts ejected at once at most (one host always "
        "may be), so detection cannot empty a cluster",
    )

    @model_validator(mode="after")
    def _base_within_max(self) -> OutlierDetection:
        if self.base_ejection > self.max_ejection:
            raise ValueError(
                f"base_ejection ({self.base_ejection:g} s) must not exceed "
                f"max_ejection ({self.max_ejection:g} s)"
            )
        return self


class RetryBudgetConfig(Section):
    """Envoy's retry budget: retries in flight are capped relative to requests in flight."""

    percent: float = Field(
        default=20.0,
        ge=0,
        le=100,
        description="retries in flight as a percent of requests in flight, so a struggling "
        "cluster is not buried under retries",
    )
    min_concurrency: int = Field(
        default=3,
        ge=0,
        description="retries in flight always allowed, so a quiet cluster can still retry",
    )


class Cluster(Section):
    name: str
    lb: Literal["round_robin", "least_request", "random", "ring_hash"] = "round_robin"
    hash_on: HashOn | None = Field(default=None, description="ring_hash: what to hash")
    endpoints: list[Endpoint] = Field(min_length=1)
    dns_refresh: PositiveDuration = Field(default=5.0, description="re-resolve DNS names")
    tls: UpstreamTls | None = None
    timeouts: ClusterTimeouts = Field(default_factory=ClusterTimeouts)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    health_check: HealthCheck | None = Field(default=None, description="active checks; none = off")
    outlier_detection: OutlierDetection | None = Field(
        default=None, description="passive ejection of failing endpoints; none = off (Envoy's)"
    )
    retry_budget: RetryBudgetConfig = Field(default_factory=RetryBudgetConfig)

    @model_validator(mode="after")
    def _hash_needs_ring(self) -> Cluster:
        if self.lb == "ring_hash" and self.hash_on is None:
            raise ValueError("lb ring_hash needs hash_on (header, cookie or source_ip)")
        if self.hash_on is not None and self.lb != "ring_hash":
            raise ValueError("hash_on is only used by lb ring_hash")
        return self


# ---------------------------------------------------------------------------------------------
# The whole file


class AdminConfig(Section):
    listen: Address = Field(
        default="127.0.0.1:9901", description="/ready, /stats, /metrics; the pod's localhost"
    )


class AccessLog(Section):
    enabled: bool = True
    path: Path | None = Field(default=None, description="none = stdout (JSON lines)")


class ProxyConfig(Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    admin: AdminConfig = Field(default_factory=AdminConfig)
    access_log: AccessLog = Field(default_factory=AccessLog)
    listeners: list[Listener] = Field(default_factory=list)
    clusters: list[Cluster] = Field(default_factory=list)
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="processes sharing the listening ports (SO_REUSEPORT), one per core to use; "
        "the first serves the admin port for all",
    )
    drain_time: Duration = Field(
        default=5.0,
        description="on SIGTERM: stop accepting, then wait up to this for in-flight requests "
        "(keep it under the pod's terminationGracePeriodSeconds)",
    )

    @model_validator(mode="after")
    def _references(self) -> ProxyConfig:
        problems = []
        clusters = {c.name for c in self.clusters}
        for kind, names in (
            ("listeners", [x.name for x in self.listeners]),
            ("clusters", [c.name for c in self.clusters]),
        ):
            seen: set[str] = set()
            for i, name in enumerate(names):
                if name in seen:
                    problems.append(f"{kind}[{i}].name: {name!r} is used twice")
                seen.add(name)
        known = ", ".join(sorted(clusters)) or "none"
        for i, listener in enumerate(self.listeners):
            if listener.cluster is not None and listener.cluster not in clusters:
                problems.append(
                    f"listeners[{i}].cluster: unknown cluster {listener.cluster!r} (known: {known})"
                )
            for j, route in enumerate(listener.routes):
                if route.cluster is not None and route.cluster not in clusters:
                    where = f"listeners[{i}].routes[{j}].cluster"
                    problems.append(f"{where}: unknown cluster {route.cluster!r} (known: {known})")
        if problems:
            raise ValueError("; ".join(problems))
        return self
