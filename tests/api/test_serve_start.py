"""`podkit serve` refuses bad input at start with a clear message, before it listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serve_harness import start

from podkit_harness import TEST_SUBNET

PODKIT = str(Path(sys.executable).parent / "podkit")


def serve(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PODKIT, "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PODKIT_STATE_DIR": str(state)},
    )


def test_a_corrupt_state_database_is_named_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "serve" / "state.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is no database" * 300)
    got = serve(tmp_path, "--listen", "127.0.0.1:1")
    assert got.returncode == 1
    assert f"{db}: not a usable SQLite database" in got.stderr
    assert db.read_bytes().startswith(b"this is no database")  # nothing lost


def test_a_bad_listen_address_is_bad_input(tmp_path: Path) -> None:
    for bad, why in (("6443", "expected HOST:PORT"), ("example.com:6443", "not an IP address")):
        got = serve(tmp_path, "--listen", bad)
        assert got.returncode == 2
        assert why in got.stderr
    assert not (tmp_path / "serve").exists()


def test_a_bad_service_range_is_bad_input(tmp_path: Path) -> None:
    for bad, why in (
        ("10.96.0.0/33", "--service-cidr '10.96.0.0/33'"),
        ("10.96.0.0/30", "the prefix must be from /12 to /28"),
        ("10.0.0.0/8", "the prefix must be from /12 to /28"),
    ):
        got = serve(tmp_path, "--service-cidr", bad)
        assert got.returncode == 2
        assert why in got.stderr
    nowhere = serve(tmp_path, "--node-port-address", "localhost")
    assert nowhere.returncode == 2
    assert "--node-port-address 'localhost': not an IP address" in nowhere.stderr
    overlapping = serve(tmp_path, "--service-cidr", TEST_SUBNET, "--listen", "127.0.0.1:1")
    assert overlapping.returncode == 1
    assert f"overlaps the pods' network {TEST_SUBNET}" in overlapping.stderr


def test_a_second_serve_on_the_same_state_is_refused(tmp_path: Path) -> None:
    first = start(tmp_path)
    try:
        second = serve(first.state, "--listen", "127.0.0.1:1")
        assert second.returncode == 1
        assert "another podkit serve uses this state directory" in second.stderr
    finally:
        first.stop()
