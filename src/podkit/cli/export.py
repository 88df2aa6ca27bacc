"""`podkit export`: the same manifests, for a real cluster (images/export.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from podkit import __version__
from podkit.cli import out
from podkit.cli.parsing import command

EXIT_BAD_INPUT = 2


def add_commands(commands: Any) -> None:
    cmd = command(
        commands,
        "export",
        export,
        "Write the manifests a Kubernetes cluster takes: built-in images by their published names.",
    )
    cmd.add_argument("files", nargs="+", type=Path, metavar="FILE", help="Manifests (- is stdin).")
    cmd.add_argument(
        "--registry-prefix",
        default="podkit",
        metavar="REGISTRY/PREFIX",
        help="Where the built-in images are published (`podkit image build-builtins --push` "
        "puts them there): log-agent becomes PREFIX/log-agent:TAG. Default %(default)s.",
    )
    cmd.add_argument(
        "--tag",
        default=__version__,
        metavar="VERSION",
        help="Their tag, unless a manifest names one (default: this podkit's version, "
        "%(default)s).",
    )
    cmd.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="Write there instead of stdout."
    )


def _literal(dumper: Any, text: str) -> Any:
    """Multi-line strings (a ConfigMap's files) as block literals, as people write them."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _dumper() -> Any:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, _literal)
    return Dumper


def export(
    files: list[Path], registry_prefix: str = "podkit", tag: str = __version__,
    output: Path | None = None,
) -> int:  # fmt: skip
    """Write FILES' objects as a cluster takes them (YAML documents, in order): each checked
    against its kind's official schema, built-in images renamed to where they are published,
    and a warning on stderr for each thing podkit does its own way that the output relies on
    (host paths, ports published on 127.0.0.1). Exit status 2 for bad input, nothing written."""
    import yaml

    from podkit.images.export import export as exported
    from podkit.manifest.errors import ManifestError
    from podkit.manifest.load import read_objects

    try:
        manifests = read_objects(files)
    except ManifestError as exc:
        for problem in exc.problems:
            out.error(str(problem))
        return EXIT_BAD_INPUT
    result = exported(manifests, registry_prefix, tag)
    text = yaml.dump_all(result.documents, Dumper=_dumper(), sort_keys=False)
    for warning in result.warnings:
        out.warning(warning)
    for given, new in sorted(result.images.items()):
        out.note(f"{given} -> {new}")
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    return 0
