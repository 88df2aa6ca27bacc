"""terminationMessagePath and terminationMessagePolicy, as Kubernetes' container-runtime
conformance tests check them (test/e2e/common/node/runtime.go): the file's content, a custom
path, a non-root writer, FallbackToLogsOnError on failure only, and the file winning over logs."""

from __future__ import annotations

import json
from typing import Any

from podkit.runtime.termination import log_tail
from podkit_harness import write_manifest


def test_log_tail_is_the_last_80_lines_cut_to_2048_bytes() -> None:
    records = b"".join(b"2026-01-01T00:00:00.000000000Z stdout F line %d\n" % i for i in range(200))
    tail = log_tail(records)
    assert tail.startswith("line 120\n") and tail.endswith("line 199\n")
    long = b"2026-01-01T00:00:00.000000000Z stderr F " + b"x" * 5000 + b"\n"
    assert log_tail(long) == "x" * 2047 + "\n"
    split = b"t stdout P abc\nt stdout F def\nt stdout P unfinished\n"
    assert log_tail(split) == "abcdef\nunfinished"


def test_termination_messages(tmp_path: Any, podkit: Any) -> None:
    m = write_manifest(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: messages}
        spec:
          restartPolicy: Never
          containers:
          - name: default-path
            image: busybox
            command: [sh, -c, "echo -n DONE > /dev/termination-log"]
          - name: custom-path-non-root
            image: busybox
            command: [sh, -c, "echo -n OK > /tmp/why/msg; exit 0"]
            terminationMessagePath: /tmp/why/msg
            securityContext: {runAsUser: 1000}
          - name: fallback-on-error
            image: busybox
            command: [sh, -c, "echo first; echo last words; exit 3"]
            terminationMessagePolicy: FallbackToLogsOnError
          - name: fallback-but-succeeded
            image: busybox
            command: [sh, -c, "echo only a log line"]
            terminationMessagePolicy: FallbackToLogsOnError
          - name: file-over-logs
            image: busybox
            command: [sh, -c, "echo a log; echo -n from the file > /dev/termination-log; exit 1"]
            terminationMessagePolicy: FallbackToLogsOnError
        """,
    )
    run = podkit("run", m, "-o", "json", "--no-logs")
    run.wait(30)
    last = json.loads(run.out[-1])
    states = {s["name"]: s["state"]["terminated"] for s in last["status"]["containerStatuses"]}
    assert states["default-path"]["message"] == "DONE"
    assert states["custom-path-non-root"]["message"] == "OK"
    assert states["fallback-on-error"]["message"] == "first\nlast words\n"
    assert states["fallback-on-error"]["exitCode"] == 3
    assert "message" not in states["fallback-but-succeeded"]
    assert states["file-over-logs"]["message"] == "from the file"
