"""Bad input to `podkit run`: a clear message, exit 2, nothing started."""

from __future__ import annotations

import pytest

from podkit_harness import REPO, run_podkit, write_manifest

write = write_manifest


CASES = {
    "schema type": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            image: simple-webapp
            ports:
            - containerPort: x8080
        """,
        ["document 1", "spec.containers[0].ports[0].containerPort", "line 10", "integer"],
    ),
    "unknown field": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            imagee: simple-webapp
        """,
        ["spec.containers[0].imagee", "line 8"],
    ),
    "duplicate container names": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - {name: c, image: simple-webapp}
          - {name: c, image: log-agent}
        """,
        ["spec.containers[1].name", "duplicate", '"c"'],
    ),
    "undeclared volume": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            image: simple-webapp
            volumeMounts: [{name: logs, mountPath: /logs}]
        """,
        ["spec.containers[0].volumeMounts[0].name", "logs"],
    ),
    "missing configmap key": (
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: cfg}
        data: {a: "1"}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            image: simple-webapp
            env:
            - name: B
              valueFrom: {configMapKeyRef: {name: cfg, key: b}}
        """,
        ["document 2", "spec.containers[0].env[0].valueFrom.configMapKeyRef", "cfg", '"b"'],
    ),
    "missing secret": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers: [{name: c, image: simple-webapp}]
          volumes: [{name: s, secret: {secretName: nope}}]
        """,
        ["spec.volumes[0].secret", "nope"],
    ),
    "same port twice": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - {name: a, image: simple-webapp, ports: [{containerPort: 8080}]}
          - {name: b, image: simple-webapp, ports: [{containerPort: 8080}]}
        """,
        ["spec.containers[1].ports[0].containerPort", "8080"],
    ),
    "probe port name": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            image: simple-webapp
            ports: [{name: web, containerPort: 8080}]
            readinessProbe: {httpGet: {path: /, port: http}}
        """,
        ["spec.containers[0].readinessProbe.httpGet.port", "line 10", '"http"'],
    ),
    "hook without handler": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            image: simple-webapp
            lifecycle: {preStop: {}}
        """,
        ["spec.containers[0].lifecycle.preStop", "exactly one handler"],
    ),
    "negative grace": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          terminationGracePeriodSeconds: -5
          containers: [{name: c, image: simple-webapp}]
        """,
        ["spec.terminationGracePeriodSeconds", "greater than or equal to 0"],
    ),
    "invalid limit": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - {name: c, image: simple-webapp, resources: {limits: {memory: 64Mb}}}
        """,
        ["spec.containers[0].resources.limits.memory", "64Mb"],
    ),
    "yaml syntax": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p
        """,
        ["line"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_manifest_exits_2_and_starts_nothing(case, tmp_path, state_dir):
    text, needles = CASES[case]
    path = write(tmp_path, text)
    result = run_podkit("run", path, state_dir=state_dir)
    assert result.returncode == 2, result.stderr
    message = result.stderr
    assert path in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert not state_dir.exists()  # nothing was started, nothing written


def test_all_problems_of_all_files_are_reported_at_once(tmp_path, state_dir):
    a = write(tmp_path, CASES["duplicate container names"][0], "a.yaml")
    b = write(tmp_path, CASES["undeclared volume"][0], "b.yaml")
    result = run_podkit("run", a, b, state_dir=state_dir)
    assert result.returncode == 2
    assert "a.yaml" in result.stderr and "b.yaml" in result.stderr


def test_bad_publish_option_and_hostpath_type(tmp_path, state_dir):
    seed = str(REPO / "examples" / "pod-definition.yaml")
    result = run_podkit("run", seed, "-p", "80x:8080", state_dir=state_dir)
    assert result.returncode == 2 and "-p" in result.stderr
    result = run_podkit("run", seed, "-p", "9999:1234", state_dir=state_dir)
    assert result.returncode == 2 and "containerPort 1234" in result.stderr
    hp = write(
        tmp_path,
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: p}}
        spec:
          containers: [{{name: c, image: x, command: ["true"]}}]
          volumes: [{{name: h, hostPath: {{path: {tmp_path}/missing, type: Directory}}}}]
        """,
    )
    result = run_podkit("run", hp, state_dir=state_dir)
    assert result.returncode == 2
    assert "spec.volumes[0].hostPath" in result.stderr and "does not exist" in result.stderr
    assert not state_dir.exists()


def test_unsupported_fields_are_listed_in_one_warning(tmp_path, state_dir):
    path = write(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: warned}
        spec:
          restartPolicy: Never
          tolerations: [{key: k, operator: Exists}]
          containers:
          - name: c
            image: x
            command: ["true"]
            securityContext: {seLinuxOptions: {level: "s0:c1"}}
        """,
    )
    result = run_podkit("run", path, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1
    assert "spec.tolerations" in warnings[0]
    assert "spec.containers[0].securityContext.seLinuxOptions" in warnings[0]


def test_help_explains_every_option(state_dir):
    result = run_podkit("run", "--help", state_dir=state_dir)
    assert result.returncode == 0
    for option in (
        "--grace",
        "--publish",
        "--no-publish",
        "--state-dir",
        "--image-catalog",
        "--backoff-scale",
        "--logs",
        "--color",
    ):
        assert option in result.stdout


def test_bad_image_catalog_state_dir_and_files(tmp_path, state_dir):
    seed = str(REPO / "examples" / "pod-definition.yaml")
    cases = {
        "images: {foo: {command: [x]\n": ["--image-catalog", "line 2", "not valid YAML"],
        "images: {foo: {command: [x], arg: [y]}}\n": ["images.foo.arg", "unknown field"],
        "images: {foo: {command: x}}\n": ["images.foo.command", "list of strings"],
        "images: {foo: {args: [y]}}\n": ["images.foo.args", "args without a command"],
    }
    for text, needles in cases.items():
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(text)
        result = run_podkit("run", seed, "--image-catalog", str(catalog), state_dir=state_dir)
        assert result.returncode == 2, result.stderr
        assert str(catalog) in result.stderr
        for needle in needles:
            assert needle in result.stderr
    missing = run_podkit(
        "run", seed, "--image-catalog", str(tmp_path / "nope.yaml"), state_dir=state_dir
    )
    assert missing.returncode == 2 and "nope.yaml: cannot read it" in missing.stderr
    assert not state_dir.exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    bad_state = run_podkit("run", seed, "--state-dir", str(a_file), state_dir=state_dir)
    assert bad_state.returncode == 2 and f"--state-dir {a_file}" in bad_state.stderr
    nofile = run_podkit("run", str(tmp_path / "absent.yaml"), state_dir=state_dir)
    assert nofile.returncode == 2 and "absent.yaml" in nofile.stderr
    kind = write(tmp_path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    unknown = run_podkit("run", kind, state_dir=state_dir)
    assert unknown.returncode == 2 and "Deployment" in unknown.stderr
    assert not state_dir.exists()
