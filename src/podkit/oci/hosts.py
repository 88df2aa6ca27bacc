"""Where a registry is reached and with which credentials: the registries file (k3s's
`registries.yaml` format), Docker's `config.json`, and pull secrets.

    mirrors:
      docker.io:
        endpoint: ["https://mirror.example.com:5000"]   # tried in order, then docker.io itself
    configs:
      mirror.example.com:5000:
        auth: {username: u, password: p}                # or `auth: <base64 user:pass>`
        tls: {ca_file: ..., cert_file: ..., key_file: ..., insecure_skip_verify: false}

Default file: /etc/podkit/registries.yaml as root, $XDG_CONFIG_HOME/podkit/registries.yaml
(~/.config/...) otherwise; a missing default file is no configuration, a missing named one an
error. Credentials are looked up by the host an endpoint names: the pod's pull secrets first,
then the registries file, then ~/.docker/config.json (`auths`, `credHelpers`, `credsStore`, as
Docker looks them up). They are never put in a message.

Scheme: `https://`, except a registry on a loopback address, reached over plain HTTP as Docker
allows without configuration (after trying HTTPS, as Docker does); a mirror endpoint names its
own scheme.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from podkit.common.config_section import Section
from podkit.oci.reference import DOCKER_HUB, is_loopback
from podkit.oci.registries_path import default_path

DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"
DOCKER_HUB_AUTH_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


class RegistryConfigError(ValueError):
    pass


class AuthConfig(Section):
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    auth: str | None = Field(default=None, repr=False, description="base64 of user:password")

    @model_validator(mode="after")
    def _one_way(self) -> AuthConfig:
        if self.auth is None and (self.username is None or self.password is None):
            raise ValueError("give username and password, or auth")
        return self

    def pair(self) -> tuple[str, str]:
        if self.auth is not None:
            return _decode_auth(self.auth)
        assert self.username is not None and self.password is not None
        return self.username, self.password


class TlsConfig(Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class HostConfig(Section):
    auth: AuthConfig | None = None
    tls: TlsConfig | None = None


class MirrorConfig(Section):
    endpoint: list[str] = Field(default_factory=list)


class RegistriesFile(Section):
    mirrors: dict[str, MirrorConfig] = Field(default_factory=dict)
    configs: dict[str, HostConfig] = Field(default_factory=dict)


def load(path: Path | None) -> RegistriesFile:
    """The registries file: `path`, or the default one if it exists."""
    named = path is not None
    path = path or default_path()
    if not named and not os.path.exists(path):  # also when its directory is closed to us
        return RegistriesFile()
    try:
        text = path.read_text()
    except FileNotFoundError:
        if named:
            raise RegistryConfigError(f"{path}: no such file") from None
        return RegistriesFile()
    except OSError as exc:
        raise RegistryConfigError(f"{path}: {exc.strerror}") from None
    import yaml

    try:
        doc = yaml.safe_load(text) or {}
        return RegistriesFile.model_validate(doc)
    except yaml.YAMLError as exc:
        raise RegistryConfigError(f"{path}: not YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RegistryConfigError(f"{path}: {problems}") from None


@dataclass(frozen=True, slots=True)
class Endpoint:
    base: str  # "https://host:port/v2" (the API root)
    host: str  # host[:port]: the key for credentials and TLS
    fallback: str | None = None  # plain HTTP to try when HTTPS fails (a loopback registry)


@dataclass
class Hosts:
    """Endpoints and credentials for every registry, from all sources."""

    config: RegistriesFile = field(default_factory=RegistriesFile)
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)  # from pull secrets
    docker_config: Path | None = None  # ~/.docker/config.json by default

    def endpoints(self, domain: str) -> list[Endpoint]:
        out = [_endpoint(url) for url in self._mirrors(domain)]
        upstream = DOCKER_HUB_ENDPOINT if domain == DOCKER_HUB else f"https://{domain}"
        end = _endpoint(upstream)
        if is_loopback(domain) and not self._tls(domain):
            end = Endpoint(end.base, end.host, f"http://{domain}/v2")
        return [*out, end]

    def _mirrors(self, domain: str) -> list[str]:
        mirror = self.config.mirrors.get(domain) or self.config.mirrors.get("*")
        return list(mirror.endpoint) if mirror else []

    def _tls(self, host: str) -> TlsConfig | None:
        cfg = self.config.configs.get(host)
        return cfg.tls if cfg else None

    def tls(self, host: str) -> TlsConfig | None:
        return self._tls(host)

    def credentials(self, host: str, domain: str) -> tuple[str, str] | None:
        """user and password for an endpoint's host (falling back to the image's registry)."""
        for key in dict.fromkeys((host, domain)):
            if key in self.secrets:
                return self.secrets[key]
            cfg = self.config.configs.get(key)
            if cfg is not None and cfg.auth is not None:
                return cfg.auth.pair()
        for key in dict.fromkeys((host, domain)):
            pair = docker_config_credentials(self.docker_config, key)
            if pair:
                return pair
        return None


def _endpoint(url: str) -> Endpoint:
    base = url.rstrip("/")
    if "://" not in base:
        base = "https://" + base
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    if not base.endswith("/v2"):
        base += "/v2"
    return Endpoint(base, host)


def pull_secret_credentials(
    secrets: list[tuple[str, Mapping[str, bytes]]],
) -> dict[str, tuple[str, str]]:
    """Credentials by registry host from `kubernetes.io/dockerconfigjson` and
    `kubernetes.io/dockercfg` Secrets (type, decoded data), as imagePullSecrets name them."""
    found: dict[str, tuple[str, str]] = {}
    for kind, data in secrets:
        key = ".dockerconfigjson" if kind == "kubernetes.io/dockerconfigjson" else ".dockercfg"
        raw = data.get(key)
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        auths = doc.get("auths", {}) if key == ".dockerconfigjson" else doc
        for registry, entry in auths.items() if isinstance(auths, dict) else ():
            pair = _entry_pair(entry)
            if pair:
                found.setdefault(_host_of(registry), pair)
    return found


def docker_config_credentials(path: Path | None, host: str) -> tuple[str, str] | None:
    """user and password for `host` from Docker's config.json, asking a credential helper when
    it names one."""
    path = path or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keys = DOCKER_HUB_AUTH_KEYS if host == DOCKER_HUB else (host, f"https://{host}")
    helper = (doc.get("credHelpers") or {}).get(host) or doc.get("credsStore")
    if isinstance(helper, str) and helper:
        for key in keys:
            pair = _ask_helper(helper, key)
            if pair:
                return pair
    auths = doc.get("auths") or {}
    for registry, entry in auths.items():
        if _host_of(registry) in (_host_of(k) for k in keys):
            pair = _entry_pair(entry)
            if pair:
                return pair
    return None


def _ask_helper(helper: str, server: str) -> tuple[str, str] | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        return None
    try:
        out = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=10
        )
        doc = json.loads(out.stdout) if out.returncode == 0 else {}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    user, secret = doc.get("Username"), doc.get("Secret")
    return (user, secret) if isinstance(user, str) and isinstance(secret, str) else None


def _entry_pair(entry: object) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            return _decode_auth(entry["auth"])
        except ValueError:
            return None
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(password, str):
        return user, password
    return None


def _decode_auth(value: str) -> tuple[str, str]:
    try:
        user, sep, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("auth is not base64 of user:password") from None
    if not sep:
        raise ValueError("auth is not base64 of user:password")
    return user, password


def _host_of(registry: str) -> str:
    """`https://index.docker.io/v1/` -> `index.docker.io`; `host:5000` stays."""
    text = registry.split("://", 1)[-1]
    host = text.split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host
