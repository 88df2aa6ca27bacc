"""A container with `tty: true` runs on a terminal of its own (stdin, stdout and stderr, its
controlling terminal, shown as /dev/console as runc shows it); its output reaches the log and
the screen as it comes. With `stdin: true` alone, stdin is a pipe that stays open."""

from __future__ import annotations

from pathlib import Path

from podkit_harness import write_manifest


def test_tty_and_stdin_containers(tmp_path: Path, podkit) -> None:
    manifest = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: terminals}
        spec:
          restartPolicy: Never
          containers:
          - name: term
            image: busybox
            tty: true
            command: ["sh", "-c", "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-terminal;
                                   tty; printf no-newline"]
          - name: piped
            image: busybox
            stdin: true
            command: ["sh", "-c", "[ -p /dev/stdin ] && echo stdin-is-a-pipe"]
          - name: plain
            image: busybox
            command: ["sh", "-c", "read line; echo read-returned-$?"]
        """,
    )
    run = podkit("run", manifest, "--no-publish")
    assert run.wait(30) == 0, run.text()
    assert run.stdout_lines("[term] ") == [
        "[term] all-terminal", "[term] /dev/console", "[term] no-newline",
    ]  # fmt: skip
    assert run.stdout_lines("[piped] ") == ["[piped] stdin-is-a-pipe"]
    assert run.stdout_lines("[plain] ") == ["[plain] read-returned-1"]  # /dev/null: EOF
    state = tmp_path / "state"
    log = next(state.glob("pods/*/logs/term/0.log")).read_bytes().decode()
    assert [line.split(" ", 2)[2] for line in log.split("\n") if line] == [
        "F all-terminal\r", "F /dev/console\r", "P no-newline",
    ]  # fmt: skip  # a record per line, the last partial (P), as CRI logs keep them
