"""Image config -> process, pull policy, event durations, user resolution and the overlay's short
lower dirs: the pure parts, without a container."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from podkit.manifest.model import Container
from podkit.oci.image_process import ProcessError, env_pairs, image_uid, process_args, stop_signal
from podkit.oci.lower_dirs import TooManyLayers, link_layers, overlay_options, remove_dangling
from podkit.oci.reference import parse
from podkit.runtime.image_pull import go_duration, pull_policy
from podkit.runtime.users import resolve_user

ENTRY, CMD = ("/bin/entry", "-v"), ("serve", "--port", "80")


@pytest.mark.parametrize(
    ("command", "args", "argv"),
    [
        # Kubernetes' table (tasks/inject-data-application/define-command-argument-container)
        ([], [], ["/bin/entry", "-v", "serve", "--port", "80"]),
        (["/bin/other"], [], ["/bin/other"]),  # command drops CMD too
        ([], ["run"], ["/bin/entry", "-v", "run"]),
        (["/bin/other"], ["run"], ["/bin/other", "run"]),
    ],
)
def test_command_replaces_entrypoint_and_args_replace_cmd(
    command: list[str], args: list[str], argv: list[str]
) -> None:
    assert process_args(ENTRY, CMD, command, args) == argv


def test_an_image_with_neither_entrypoint_nor_cmd_needs_a_command() -> None:
    assert process_args((), ("sh",), [], []) == ["sh"]
    assert process_args(("",), ("sh",), [], []) == ["sh"]  # a reset ENTRYPOINT [""]
    with pytest.raises(ProcessError, match="no command specified"):
        process_args((), (), [], [])


def test_image_env_and_numeric_user() -> None:
    assert env_pairs(("PATH=/opt/bin:/bin", "EMPTY", "A=b=c")) == {
        "PATH": "/opt/bin:/bin",
        "EMPTY": "",
        "A": "b=c",
    }
    assert image_uid("1000:50") == 1000 and image_uid("0") == 0
    assert image_uid("nginx") is None and image_uid("") is None


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("", signal.SIGTERM),
        ("SIGQUIT", signal.SIGQUIT),
        ("quit", signal.SIGQUIT),
        ("9", 9),
        ("SIGRTMIN+3", signal.SIGRTMIN + 3),
        ("SIGWINCH", signal.SIGWINCH),
    ],
)
def test_stop_signal(text: str, number: int) -> None:
    assert stop_signal(text) == number


def test_a_bad_stop_signal_is_refused() -> None:
    for text in ("SIGNOPE", "99", "RTMIN-1"):
        with pytest.raises(ProcessError, match="no such signal"):
            stop_signal(text)


PASSWD = "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:102:nginx:/var/www:/bin/false\n"
GROUP = "root:x:0:\nnginx:x:102:\nwww:x:33:nginx\n"


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        ("nginx", (101, 102)),
        ("101", (101, None)),  # the primary group comes from passwd later (process_ids)
        ("4000", (4000, None)),  # a uid the image does not know still runs
        ("nginx:www", (101, 33)),
        ("101:7", (101, 7)),
        ("nginx:0", (101, 0)),
    ],
)
def test_image_user_resolution(spec: str, ids: tuple[int, int | None]) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == ids


def test_unknown_image_users_and_groups_are_errors() -> None:
    with pytest.raises(ValueError, match="unable to find user app"):
        resolve_user("app", PASSWD, GROUP)
    with pytest.raises(ValueError, match="unable to find group staff"):
        resolve_user("nginx:staff", PASSWD, GROUP)
    with pytest.raises(ValueError, match="invalid USER"):
        resolve_user("a:b:c", PASSWD, GROUP)


@pytest.mark.parametrize(
    ("image", "declared", "policy"),
    [
        ("busybox", None, "Always"),
        ("busybox:latest", None, "Always"),
        ("busybox:1.36", None, "IfNotPresent"),
        (f"busybox@sha256:{'a' * 64}", None, "IfNotPresent"),
        ("busybox:1.36", "Never", "Never"),
        ("busybox", "IfNotPresent", "IfNotPresent"),
    ],
)
def test_pull_policy_defaults_as_the_api_server(
    image: str, declared: str | None, policy: str
) -> None:
    raw = {"name": "c", "image": image, **({"imagePullPolicy": declared} if declared else {})}
    assert pull_policy(Container("c", image, raw=raw), parse(image)) == policy


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0004, "0ms"), (0.25, "250ms"), (1.2, "1.2s"), (12.3456, "12.345s"), (61.5, "1m1.5s")],
)
def test_durations_read_as_the_kubelets(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_lower_dirs_are_short_links_topmost_first(tmp_path: Path) -> None:
    chains = [f"sha256:{c * 64}" for c in "abc"]
    for chain in chains:
        (tmp_path / "layers" / chain[7:]).mkdir(parents=True)
    lower = link_layers(tmp_path, chains)
    assert lower == ["l/" + "c" * 20, "l/" + "b" * 20, "l/" + "a" * 20]
    assert (tmp_path / lower[0]).resolve() == (tmp_path / "layers" / ("c" * 64))
    assert link_layers(tmp_path, chains) == lower  # the links are there: made once
    # 127 layers (Docker's most) fit the kernel's page; a thousand do not.
    many = [f"sha256:{i:064x}" for i in range(1000)]
    upper = "/var/lib/podkit/pods/default_web_0123/containers/web/fs"
    names = [f"l/{c[7:27]}" for c in many]
    assert len(overlay_options(names[:127], f"{upper}/upper", f"{upper}/work")) < 4096
    with pytest.raises(TooManyLayers, match="1000 layers"):
        overlay_options(names, f"{upper}/upper", f"{upper}/work")
    (tmp_path / "layers" / ("a" * 64)).rmdir()
    assert remove_dangling(tmp_path) == 1
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["b" * 20, "c" * 20]
