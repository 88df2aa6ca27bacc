"""The auth-adapter's YAML config, and the proxy config it becomes.

    listen: 127.0.0.1:8081            # the pod's localhost only: other pods never get in
    admin: {listen: 127.0.0.1:9902}   # /healthz /readyz /metrics /stats
    upstreams:
      - name: billing
        prefix: /billing/             # the app calls http://127.0.0.1:8081/billing/invoices ...
        url: https://api.example.com/v1/   # ... which goes to https://api.example.com/v1/invoices
        oauth2: {...}                 # oauth_config.OAuth2Config
        tls: {ca_file: /etc/api-ca.pem}    # the API's TLS; the system's CAs by default
        timeout: 30s

Each upstream is matched by path `prefix` (default /) and/or `hosts` (the Host the app sends);
the first that matches wins. The prefix is replaced by the URL's path and the Host by the URL's
authority; everything else of the app's request passes through as it is.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from podkit.common.config import format_hostport, parse_hostport
from podkit.common.config_section import Section, check_http_url
from podkit.images.auth_adapter.oauth_config import OAuth2Config
from podkit.proxy.config import Duration, PositiveDuration, ProxyConfig


def _loopback(value: str) -> str:
    """A listen address on the pod's localhost: anything else would hand the adapter's
    credentials to whoever can reach the pod."""
    host, _port = parse_hostport(value)
    if host == "localhost":
        return value
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{value!r} is not on the pod's localhost (127.0.0.1 or [::1]): other pods could "
            "use the adapter's credentials"
        )
    return value


class Admin(Section):
    listen: str = Field(default="127.0.0.1:9902", description="/healthz /readyz /metrics /stats")

    @field_validator("listen")
    @classmethod
    def _check(cls, value: str) -> str:
        return _loopback(value)


class ApiTls(Section):
    ca_file: Path | None = Field(default=None, description="none = the system's CAs")
    verify: bool = True


class Upstream(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    prefix: str = Field(default="/", description="the path prefix the app calls, e.g. /billing/")
    hosts: list[str] = Field(default_factory=list, description="Host values (exact or *.suffix)")
    url: str = Field(description="the API's base URL: http(s)://host[:port][/path/]")
    oauth2: OAuth2Config
    tls: ApiTls = Field(default_factory=ApiTls)
    timeout: Duration = Field(default=30.0, description="for the API's whole response; 0 = none")
    retry_on_401: bool = Field(
        default=True, description="a 401 blaming the token: new token, request sent once more"
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value if value.endswith("/") else value + "/"

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        check_http_url(value, instead="oauth2 (the adapter adds the credentials)")
        if urlsplit(value).query:
            raise ValueError("a query is not allowed: the app's request brings its own")
        return value

    @property
    def https(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def authority(self) -> str:
        """The Host the API gets: the URL's, without a default port."""
        return urlsplit(self.url).netloc

    @property
    def base_path(self) -> str:
        path = urlsplit(self.url).path or "/"
        return path if path.endswith("/") else path + "/"


class Readiness(Section):
    require_token: bool = Field(
        default=True, description="/readyz says ready only once every upstream has a token"
    )


class AccessLog(Section):
    enabled: bool = True


class AuthAdapterConfig(Section):
    listen: str = Field(default="127.0.0.1:8081", description="where the app sends its requests")
    admin: Admin = Field(default_factory=Admin)
    upstreams: list[Upstream] = Field(default_factory=list)
    readiness: Readiness = Field(default_factory=Readiness)
    access_log: AccessLog = Field(default_factory=AccessLog)
    drain_time: PositiveDuration = 5.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return _loopback(value)

    @model_validator(mode="after")
    def _check_upstreams(self) -> AuthAdapterConfig:
        names = [u.name for u in self.upstreams]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"upstreams: the name {name!r} is used twice")
        return self


def proxy_config(config: AuthAdapterConfig) -> ProxyConfig:
    """The proxy engine's config: one listener, a route and a cluster per upstream."""
    routes: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    for up in config.upstreams:
        routes.append(
            {
                "name": up.name,
                "match": {"prefix": up.prefix, "hosts": up.hosts},
                "cluster": up.name,
                "rewrite_prefix": up.base_path,
                "host_rewrite": up.authority,
                "timeout": up.timeout,
            }
        )
        cluster: dict[str, Any] = {
            "name": up.name,
            "endpoints": [{"address": format_hostport(up.host, up.port)}],
        }
        if up.https:
            cluster["tls"] = {
                "ca_file": up.tls.ca_file,
                "server_name": up.host,
                "verify": up.tls.verify,
            }
        clusters.append(cluster)
    return ProxyConfig.model_validate(
        {
            "admin": {"listen": config.admin.listen},
            "access_log": {"enabled": config.access_log.enabled},
            "drain_time": config.drain_time,
            "log_level": config.log_level,
            "listeners": [
                {
                    "name": "app",
                    "listen": config.listen,
                    "protocol": "http",
                    "routes": routes,
                    # The API is outside: the pod's addresses and ports are none of its business.
                    "forwarded_headers": False,
                }
            ],
            "clusters": clusters,
        }
    )
