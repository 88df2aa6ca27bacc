"""Image name -> entry point: the only place the runtime learns about built-in images."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

# Built-in images: name -> python module run as the container's ENTRYPOINT.
BUILTIN: dict[str, str] = {
    "simple-webapp": "podkit.images.webapp",
    "log-agent": "podkit.images.log_agent",
    "ambassador": "podkit.images.ambassador",
    "metrics-adapter": "podkit.images.metrics_adapter",
    "auth-adapter": "podkit.images.auth_adapter",
    "oauth-demo": "podkit.images.oauth_demo",  # stand-in external API + IdP (examples)
}


# The built-in images run on podkit's own interpreter and packages; their code is found through
# this path even when that interpreter is not a virtualenv's (e.g. podkit run by another user).
BUILTIN_PYTHONPATH = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))


@dataclass(frozen=True)
class Image:
    name: str
    entrypoint: list[str]  # Docker ENTRYPOINT: replaced by the container's `command`
    cmd: list[str]  # Docker CMD: replaced by the container's `args`
    builtin: bool


def builtin_name(image: str) -> str | None:
    """`log-agent`, `podkit/log-agent` and `podkit/log-agent:<tag>` all name the built-in."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    for prefix in ("docker.io/podkit/", "podkit/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name if name in BUILTIN else None


def load_user_catalog(path: Path) -> dict[str, Image]:
    """A user catalog file names the images that run host programs, with the host's files:

    images:
      my-api:
        command: ["/usr/local/bin/my-api"]    # its ENTRYPOINT, replaced by a container's command
        args: ["--port", "9000"]              # its CMD
      host-tools: {}                          # no command: each container gives its own

    Every other name is a registry image. Raises ValueError naming the file, field and reason.
    """
    where = f"--image-catalog {path}"
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{where}{line}: not valid YAML: {exc}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict):
        raise ValueError(f"{where}: field 'images': must be a mapping of image name to entry")
    out: dict[str, Image] = {}
    for name, entry in images.items():
        field = f"{where}: field 'images.{name}"
        entry = {} if entry is None else entry
        if not isinstance(entry, dict):
            raise ValueError(f"{field}': must be a mapping with command and args")
        unknown = sorted(set(entry) - {"command", "args"})
        if unknown:
            raise ValueError(f"{field}.{unknown[0]}': unknown field (known: command, args)")
        command, args = entry.get("command", []), entry.get("args", [])
        if not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
            raise ValueError(f"{field}.command': must be a list of strings")
        if args and not command:
            raise ValueError(f"{field}.args': args without a command")
        if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
            raise ValueError(f"{field}.args': must be a list of strings")
        out[str(name)] = Image(str(name), list(command), list(args), builtin=False)
    return out


def resolve(image: str, user: dict[str, Image] | None = None) -> Image | None:
    """The image for a container's `image:` field, or None when nothing provides it."""
    name = builtin_name(image)
    if name is not None:
        return Image(name, [sys.executable, "-m", BUILTIN[name]], [], builtin=True)
    if user and image in user:
        return user[image]
    return None
