"""What a container runs: its argv and environment, resolved as the kubelet would."""

from __future__ import annotations

import json

from podkit.images import catalog
from podkit.manifest.model import Bundle, Container, Pod
from podkit.runtime import env as envmod

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(Exception):
    """The image resolves to nothing: the container waits with reason ErrImagePull."""


def environment(pod: Pod, c: Container, bundle: Bundle, pod_ip: str) -> dict[str, str]:
    """Image env, podkit's pod metadata, then the container's env (raises env.ResolveError)."""
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
    extra = {"status.podIP": pod_ip, "status.hostIP": "127.0.0.1"}
    return {**injected, **envmod.resolve_env(pod, c, bundle, extra)}


def argv(c: Container, env: dict[str, str], user_images: dict[str, catalog.Image]) -> list[str]:
    """command/args over the image's ENTRYPOINT/CMD, with $(VAR) expanded."""
    command, args = envmod.expand_command(c, env)
    if command:
        return command + args
    image = catalog.resolve(c.image, user_images)
    if image is None:
        raise ImageError(
            f'image "{c.image}" is not a podkit built-in image '
            f"({', '.join(sorted(catalog.BUILTIN))}) and the container has no "
            "command: add `command:` to run a host program, or map the image "
            "in an image catalog file (--image-catalog)"
        )
    return image.entrypoint + (args or image.cmd)


def holds_signals(c: Container) -> bool:
    """Built-in images take SIGTERM held and release it once they handle it (early_stop)."""
    return catalog.builtin_name(c.image) is not None and not c.command
