from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from log_agent_harness import (  # noqa: E402
    POD_ENV,
    ImageProcess,
    RecordingReceiver,
    StartAgent,
    image_env,
)
from podkit_harness import TEST_BRIDGE, TEST_SUBNET, Podkit  # noqa: E402

# The session's own bridge for pod IPs (podkit_harness.TEST_BRIDGE), removed when it ends, so a
# test run leaves the host's network as it found it (podkit0 is the users').


@pytest.fixture(autouse=True, scope="session")
def test_bridge() -> Iterator[None]:
    os.environ["PODKIT_BRIDGE"], os.environ["PODKIT_SUBNET"] = TEST_BRIDGE, TEST_SUBNET
    yield
    if os.geteuid() == 0:
        from podkit.runtime import network

        network.remove_bridge(network.NetworkConfig(TEST_BRIDGE, TEST_SUBNET))
        shutil.rmtree(network.HOST_DIR / "network" / TEST_BRIDGE, ignore_errors=True)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def podkit(state_dir: Path) -> Iterator[type[Podkit]]:
    """Start podkit runs with `podkit(args...)`; any still running at the end is killed."""
    started: list[Podkit] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Podkit:
        p = Podkit(*args, state_dir=state_dir, env=env)
        started.append(p)
        return p

    yield start  # type: ignore[misc]
    for p in started:
        p.kill()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """Start log-agents with `start_agent(args..., **env)`; killed at the end if still running.

    Each gets its own data_dir under tmp_path unless LOG_AGENT_DATA_DIR is given (a restart test
    passes the same one twice)."""
    started: list[ImageProcess] = []

    def start(*args: str, **env: str) -> ImageProcess:
        env.setdefault("LOG_AGENT_DATA_DIR", str(tmp_path / f"agent-data-{len(started)}"))
        proc = ImageProcess(
            "podkit.images.log_agent", list(args), image_env(**POD_ENV, **env), tmp_path
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`tmpfs("2m")`: a tmpfs of that size under tmp_path, a disk that really fills up;
    unmounted at the end (lazily: a failed test may still hold a file open in it)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs-{len(mounted)}"
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    """A real HTTP receiver for log-agent's http sink, up from the start."""
    r = RecordingReceiver()
    r.up()
    yield r
    r.down()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A directory for a log-agent to tail."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:  # namespaces, cgroups, bridges: run it as `make test` does, as root
        raise pytest.UsageError("podkit's test suite needs root: run `make test` as root")
