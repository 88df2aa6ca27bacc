"""What a container runs: its argv and environment, resolved as the kubelet would, from a
built-in image, a host image of the --image-catalog file, or a registry image's config."""

from __future__ import annotations

import json

from podkit.images import catalog
from podkit.manifest.model import Bundle, Container, Pod
from podkit.oci.image_process import process_args
from podkit.oci.manifest import ImageConfig
from podkit.runtime import env as envmod
from podkit.runtime import service_env

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(Exception):
    """A host image without a command: the container waits (CreateContainerConfigError)."""


def environment(
    pod: Pod, c: Container, bundle: Bundle, pod_ip: str, image_env: dict[str, str] | None = None
) -> dict[str, str]:
    """podkit's defaults and pod metadata, the image's Env, then the container's env (raises
    env.ResolveError)."""
    injected = {
        "PATH": DEFAULT_PATH,
        "HOSTNAME": pod.hostname,
        "PODKIT_POD_NAME": pod.name,
        "PODKIT_POD_NAMESPACE": pod.namespace,
        "PODKIT_POD_UID": pod.uid,
        "PODKIT_NODE_NAME": pod.node_name,
        "PODKIT_CONTAINER_NAME": c.name,
        "PODKIT_POD_LABELS": json.dumps(pod.labels),
    }
    if catalog.builtin_name(c.image):
        injected["PYTHONUNBUFFERED"] = "1"  # the image's ENV: line-buffered logs
        injected["PYTHONPATH"] = catalog.BUILTIN_PYTHONPATH  # where the image's code lives
    injected.update(image_env or {})
    extra = {"status.podIP": pod_ip, "status.hostIP": "127.0.0.1"}
    links = (pod.raw.get("spec") or {}).get("enableServiceLinks", True) is not False
    services = service_env.service_env(bundle.services, pod.namespace, links)
    return {**injected, **envmod.resolve_env(pod, c, bundle, extra, services)}


def argv(c: Container, env: dict[str, str], image: catalog.Image | ImageConfig) -> list[str]:
    """command/args over the image's ENTRYPOINT/CMD, with $(VAR) expanded (raises
    ImageError for a host image that names no command and the container gives none,
    image_process.ProcessError for a registry image that names none)."""
    command, args = envmod.expand_command(c, env)
    if isinstance(image, ImageConfig):
        return process_args(image.entrypoint, image.cmd, command, args)
    if command:
        return command + args
    if not image.entrypoint:
        raise ImageError(
            f'image "{c.image}" is a host image of the --image-catalog file with no command: '
            "the container must give one (`command:`)"
        )
    return image.entrypoint + (args or image.cmd)


def holds_signals(c: Container) -> bool:
    """Built-in images take SIGTERM held and release it once they handle it (early_stop)."""
    return catalog.builtin_name(c.image) is not None and not c.command
