"""The auth-adapter's pure parts: what a 401 says about the token, and the proxy config an
adapter config becomes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from podkit.images.auth_adapter.challenge import challenges, new_token_may_help
from podkit.images.auth_adapter.config import AuthAdapterConfig, proxy_config

OAUTH2 = {"token_url": "https://idp/token", "client_id": "c", "client_secret_env": "S"}


@pytest.mark.parametrize(
    ("value", "helps"),
    [
        (None, True),  # no WWW-Authenticate at all
        (b"Bearer", True),
        (b'Bearer realm="api"', True),
        (b'Bearer realm="api", error="invalid_token", error_description="expired"', True),
        (b"Bearer error=invalid_token", True),
        (b'Basic realm="x", Bearer error="invalid_token"', True),
        (b'Negotiate abc123==, Bearer realm="a"', True),
        (b'Bearer error="insufficient_scope", scope="admin"', False),
        (b'Bearer error="invalid_request"', False),
        (b'Basic realm="x"', False),  # another scheme only: a token cannot help
    ],
)
def test_whether_a_new_token_may_help(value: bytes | None, helps: bool) -> None:
    assert new_token_may_help(value) is helps


def test_challenge_parameters_are_unquoted() -> None:
    got = challenges('Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="x"')
    assert got == [
        ("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        ("basic", {"realm": "x"}),
    ]


def adapter_config(**upstream: object) -> AuthAdapterConfig:
    up = {"name": "api", "url": "https://api.example.com/v1", "oauth2": OAUTH2, **upstream}
    return AuthAdapterConfig.model_validate({"upstreams": [up]})


def test_an_upstream_becomes_a_route_and_a_tls_cluster() -> None:
    pc = proxy_config(adapter_config(prefix="/billing"))
    route = pc.listeners[0].routes[0]
    assert route.match.prefix == "/billing/"  # a prefix is a directory
    assert route.rewrite_prefix == "/v1/"
    assert route.host_rewrite == "api.example.com"
    cluster = pc.clusters[0]
    assert cluster.endpoints[0].address == "api.example.com:443"
    assert cluster.tls is not None and cluster.tls.server_name == "api.example.com"
    assert pc.listeners[0].listen == "127.0.0.1:8081"


def test_a_plain_http_api_with_a_port_keeps_it_in_the_host() -> None:
    pc = proxy_config(adapter_config(url="http://[::1]:8080/"))
    assert pc.listeners[0].routes[0].host_rewrite == "[::1]:8080"
    assert pc.clusters[0].endpoints[0].address == "[::1]:8080"
    assert pc.clusters[0].tls is None


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "10.0.0.5:8081", "example.com:8081"])
def test_only_the_pods_localhost_may_be_listened_on(listen: str) -> None:
    with pytest.raises(ValidationError, match="not on the pod's localhost"):
        AuthAdapterConfig.model_validate({"listen": listen})


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "[::1]:8081", "localhost:8081"])
def test_loopback_addresses_are_accepted(listen: str) -> None:
    assert AuthAdapterConfig.model_validate({"listen": listen}).listen == listen
