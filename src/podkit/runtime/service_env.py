"""The Docker-link style environment the kubelet gives a container for each Service it may
use (pkg/kubelet/envvars), pure: the Services of the pod's namespace while
enableServiceLinks is true (the default), and the `kubernetes` Service of `default` always.

    WEB_SERVICE_HOST=10.96.0.7          WEB_PORT=tcp://10.96.0.7:80
    WEB_SERVICE_PORT=80                 WEB_PORT_80_TCP=tcp://10.96.0.7:80
    WEB_SERVICE_PORT_HTTP=80            WEB_PORT_80_TCP_PROTO=tcp
                                        WEB_PORT_80_TCP_PORT=80
                                        WEB_PORT_80_TCP_ADDR=10.96.0.7

Only Services with a cluster IP count (not headless, not ExternalName). The container's own
env may use these in $(VAR) and overrides them.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def _prefix(name: str) -> str:
    return name.upper().replace("-", "_")


def for_service(svc: Obj) -> dict[str, str]:
    spec = svc.get("spec") or {}
    ip = spec.get("clusterIP")
    ports = spec.get("ports") or []
    if not ip or ip == "None" or spec.get("type") == "ExternalName" or not ports:
        return {}
    name = _prefix(svc["metadata"]["name"])
    first = ports[0]
    env = {
        f"{name}_SERVICE_HOST": ip,
        f"{name}_SERVICE_PORT": str(first["port"]),
        f"{name}_PORT": f"{str(first.get('protocol', 'TCP')).lower()}://{ip}:{first['port']}",
    }
    for port in ports:
        proto = str(port.get("protocol", "TCP"))
        if port.get("name"):
            env[f"{name}_SERVICE_PORT_{_prefix(port['name'])}"] = str(port["port"])
        key = f"{name}_PORT_{port['port']}_{proto.upper()}"
        env[key] = f"{proto.lower()}://{ip}:{port['port']}"
        env[f"{key}_PROTO"] = proto.lower()
        env[f"{key}_PORT"] = str(port["port"])
        env[f"{key}_ADDR"] = ip
    return env


def service_env(
    services: dict[tuple[str, str], Obj], namespace: str, enable_links: bool
) -> dict[str, str]:
    env: dict[str, str] = {}
    if enable_links:
        for (ns, _), svc in sorted(services.items()):
            if ns == namespace:
                env.update(for_service(svc))
    master = services.get(("default", "kubernetes"))
    if master is not None:
        env.update(for_service(master))
    return env
