"""`podkit export`: the manifests a real cluster takes. Built-in images get their published
names, the rest stays as given, what relies on podkit's own ways is said, bad input is
refused; every example's output passes the official schemas (kubernetes-validate, strict) and
the real kubectl's `apply --dry-run=client` (against podkit serve) gives the same objects."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from podkit import __version__
from podkit.images.catalog import builtin_name
from podkit.images.export import export, published
from podkit.manifest.yaml_reader import parse_documents
from podkit_harness import REPO

PODKIT = str(Path(sys.executable).parent / "podkit")
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

MIXED = """apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - {name: app, image: simple-webapp, ports: [{containerPort: 8080, hostPort: 8080}]}
  - {name: agent, image: podkit/log-agent:1.2}
  - {name: web, image: nginx:1.25}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      initContainers:
      - {name: proxy, image: ambassador, restartPolicy: Always, imagePullPolicy: Never}
      containers:
      - name: app
        image: docker.io/podkit/metrics-adapter
        volumeMounts: [{name: logs, mountPath: /l}]
      volumes:
      - {name: logs, hostPath: {path: /var/log/app}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: c}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: once, image: auth-adapter}]
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {type: NodePort, selector: {a: b}, ports: [{port: 80}]}
"""


def images(doc: dict) -> list[str]:  # type: ignore[type-arg]
    spec = doc["spec"]
    for key in ("jobTemplate", "spec", "template", "spec"):
        if "containers" not in spec and key in spec:
            spec = spec[key]
    return [c["image"] for k in ("initContainers", "containers") for c in spec.get(k, [])]


def test_built_in_images_get_their_published_names_and_the_rest_stays() -> None:
    found, problems = parse_documents("mixed.yaml", MIXED)
    assert problems == []
    result = export(found, "registry.example:5000/team/", "2.0")
    pod, deployment, cron, service = result.documents
    assert images(pod) == [
        "registry.example:5000/team/simple-webapp:2.0",
        "registry.example:5000/team/log-agent:1.2",  # its own tag kept
        "nginx:1.25",
    ]
    assert images(deployment) == [
        "registry.example:5000/team/ambassador:2.0",
        "registry.example:5000/team/metrics-adapter:2.0",
    ]
    assert images(cron) == ["registry.example:5000/team/auth-adapter:2.0"]
    assert service == found[3].data  # as given
    assert found[0].data["spec"]["containers"][0]["image"] == "simple-webapp"  # not changed
    assert result.warnings == [
        "mixed.yaml: Pod/p: containers[0] app: hostPort 8080: podkit binds it on 127.0.0.1; "
        "a node, on all its addresses",
        "mixed.yaml: Deployment/d: initContainers[0] proxy: imagePullPolicy Never: load "
        "registry.example:5000/team/ambassador:2.0 into the cluster's nodes (kind load, "
        "k3s ctr images import)",
        "mixed.yaml: Deployment/d: volume logs: hostPath /var/log/app is a path on the node "
        "the pod lands on, not this machine's",
        "mixed.yaml: Service/s: a NodePort: podkit publishes it on 127.0.0.1; a cluster, on "
        "every node's addresses",
    ]
    assert published("log-agent", "podkit", __version__) == f"podkit/log-agent:{__version__}"
    assert published("busybox", "podkit", "1") is None


def test_built_in_containers_learn_their_pod_through_the_downward_api() -> None:
    """podkit tells every container its pod; a cluster (or podman) only when the manifest asks,
    so the export asks for the built-ins, which put it in their events. What is set stays."""
    found, _ = parse_documents(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - {name: agent, image: log-agent, env: [{name: POD_NAME, value: mine}]}\n"
        "  - {name: web, image: nginx}\n",
    )
    agent, web = export(found).documents[0]["spec"]["containers"]
    uid = {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}}
    assert agent["env"] == [
        {"name": "POD_NAME", "value": "mine"},
        {"name": "POD_UID", "valueFrom": uid},
        {"name": "CONTAINER_NAME", "value": "agent"},
    ]
    assert "env" not in web


def test_bad_input_is_refused_with_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {replicas: many, selector: {matchLabels: {a: b}}, template: {}}\n"
        "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    )
    got = subprocess.run([PODKIT, "export", str(bad)], capture_output=True, text=True)
    assert got.returncode == 2
    assert got.stdout == ""  # nothing half-written
    assert f"{bad}: document 1: spec.replicas (line 4)" in got.stderr
    assert f"{bad}: document 2: kind (line 7): no official schema for example.com/v1 Widget" in (
        got.stderr
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, str]]:
    """Each example, exported with a registry prefix."""
    out = {}
    for example in EXAMPLES:
        got = subprocess.run(
            [PODKIT, "export", str(example), "--registry-prefix", "127.0.0.1:5000/podkit"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        out[example] = got.stdout
    yield out


def test_every_example_exports_to_what_the_official_schemas_accept(
    exported: dict[Path, str],
) -> None:
    for example, text in exported.items():
        for doc in yaml.safe_load_all(text):
            kubernetes_validate.validate(doc, "1.37.0", strict=True)  # raises if not
            if doc["kind"] in ("Pod", "Deployment"):  # no name left that means a built-in
                assert [i for i in images(doc) if builtin_name(i)] == [], example
