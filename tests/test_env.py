"""A container's environment and its projected volume files, with Kubernetes' semantics."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from podkit.manifest.load import load_files
from podkit.manifest.model import Bundle, KeyValueObject, Pod, Source
from podkit.runtime.env import ResolveError, expand, expand_command, resolve_env
from podkit.runtime.volume_files import projected_files

CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  mode: fast
  color: blue
  app.yaml: "port: 8080\\n"
binaryData:
  logo.bin: AAEC
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData:
  user: admin
  password: s3cret
"""


def load(tmp_path: Path, pod: str) -> tuple[Pod, Bundle]:
    path = tmp_path / "pod.yaml"
    path.write_text(textwrap.dedent(CONFIG) + "---\n" + textwrap.dedent(pod))
    bundle = load_files([path])
    return bundle.pods[0], bundle


def mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


# --- $(VAR) expansion: the cases of Kubernetes' own expand_test.go --------------------------

CONTEXT = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(VAR_A)", "A"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
        ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
        ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
        ("$(VAR_REF)", "$(VAR_A)"),
        ("foo$(VAR_EMPTY)bar", "foobar"),
        ("foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
        ("$?_boo_$!", "$?_boo_$!"),
        ("$VAR_A", "$VAR_A"),
        ("$(VAR_DNE)", "$(VAR_DNE)"),
        ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
        ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
        ("$$$$$$$(VAR_A)", "$$$A"),
        ("${VAR_A}", "${VAR_A}"),
        ("$(VAR_B)_______$(A", "B_______$(A"),
        ("$(VAR_C)_______$(", "C_______$("),
        ("$(VAR_A)foobarzab$", "Afoobarzab$"),
        ("--$($($($($--", "--$($($($($--"),
        ("$(foo$$var)", "$(foo$$var)"),
        ("ünï$(VAR_A)cödé$é", "ünïAcödé$é"),
    ],
)
def test_expand_matches_kubernetes(text: str, expected: str) -> None:
    assert expand(text, CONTEXT) == expected


# --- resolve_env -------------------------------------------------------------------------------


def test_env_from_then_env_in_order_with_expansion(tmp_path: Path) -> None:
    pod, bundle = load(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - name: app
            image: simple-webapp
            envFrom:
            - configMapRef: {name: app-config}
              prefix: CFG_
            - secretRef: {name: creds}
            - configMapRef: {name: absent, optional: true}
            env:
            - {name: GREETING, value: hello}
            - {name: MESSAGE, value: "$(GREETING) $(TARGET) from $(CFG_mode) $(user)"}
            - {name: TARGET, value: world}
            - {name: ESCAPED, value: "$$(GREETING) costs $$5"}
            - {name: CFG_color, value: red}
            - {name: EMPTY}
            - name: PASSWORD
              valueFrom: {secretKeyRef: {name: creds, key: password}}
            - name: COLOR
              valueFrom: {configMapKeyRef: {name: app-config, key: color}}
            - name: NO_MAP
              valueFrom: {configMapKeyRef: {name: absent, key: x, optional: true}}
            - name: NO_KEY
              valueFrom: {configMapKeyRef: {name: app-config, key: x, optional: true}}
        """,
    )
    env = resolve_env(pod, pod.containers[0], bundle)
    assert env == {
        "CFG_app.yaml": "port: 8080\n",  # valid under Kubernetes' relaxed env var names
        "CFG_color": "red",  # env overrides envFrom
        "CFG_mode": "fast",
        "password": "s3cret",
        "user": "admin",
        "GREETING": "hello",
        # TARGET is defined after MESSAGE: the reference stays as written, as in Kubernetes
        "MESSAGE": "hello $(TARGET) from fast admin",
        "TARGET": "world",
        "ESCAPED": "$(GREETING) costs $5",
        "EMPTY": "",
        "PASSWORD": "s3cret",
        "COLOR": "blue",
    }
    assert "CFG_logo.bin" not in env  # binaryData never reaches the environment


def test_downward_api_fields(tmp_path: Path) -> None:
    pod, bundle = load(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          namespace: default
          uid: 11111111-2222-4333-8444-555555555555
          labels: {app: shop}
          annotations: {team: payments}
        spec:
          nodeName: node-1
          serviceAccountName: robot
          containers:
          - name: app
            image: simple-webapp
            env:
            - {name: NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
            - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
            - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
            - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['team']"}}}
            - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: HOST_IP, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: status.hostIP}}}
        """,
    )
    container = pod.containers[0]
    assert resolve_env(pod, container, bundle) == {
        "NAME": "web",
        "NS": "default",
        "UID": "11111111-2222-4333-8444-555555555555",
        "APP": "shop",
        "TIER": "",
        "TEAM": "payments",
        "NODE": "node-1",
        "SA": "robot",
        "POD_IP": "127.0.0.1",
        "HOST_IP": "127.0.0.1",
    }
    env = resolve_env(pod, container, bundle, {"status.podIP": "10.88.0.7"})
    assert env["POD_IP"] == "10.88.0.7"


def test_resource_fields_with_divisors_and_node_defaults(tmp_path: Path) -> None:
    pod, bundle = load(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - name: app
            image: simple-webapp
            resources:
              limits: {cpu: 500m, memory: 64Mi}
              requests: {memory: 32Mi}
            env:
            - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
            - name: MILLICPU
              valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}
            - name: MEM_MI
              valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
            - name: REQ_MEM
              valueFrom: {resourceFieldRef: {resource: requests.memory}}
            - name: REQ_MILLICPU
              valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}
            - name: AGENT_CPU
              valueFrom: {resourceFieldRef: {containerName: agent, resource: limits.cpu}}
          - name: agent
            image: log-agent
            env:
            - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
            - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
            - {name: REQ_CPU, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}
        """,
    )
    app, agent = pod.containers
    assert resolve_env(pod, app, bundle) == {
        "CPU": "1",  # 0.5 cores, rounded up
        "MILLICPU": "500",
        "MEM_MI": "64",
        "REQ_MEM": str(32 * 2**20),
        "REQ_MILLICPU": "500",  # a missing request defaults to the limit
        "AGENT_CPU": str(os.cpu_count()),
    }
    # without limits, the node's capacity is reported; without requests, zero
    assert resolve_env(pod, agent, bundle) == {
        "CPU": str(os.cpu_count()),
        "MEM": str(mem_total()),
        "REQ_CPU": "0",
    }


def test_command_and_args_expand_from_the_environment(tmp_path: Path) -> None:
    pod, bundle = load(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - name: app
            image: busybox
            command: ["sh", "-c", "echo $(MSG) $$(MSG) $(NOPE) $HOME"]
            args: ["--mode=$(CFG_MODE)"]
            env:
            - {name: MSG, value: hi}
            - name: CFG_MODE
              valueFrom: {configMapKeyRef: {name: app-config, key: mode}}
        """,
    )
    container = pod.containers[0]
    env = resolve_env(pod, container, bundle)
    assert expand_command(container, env) == (
        ["sh", "-c", "echo hi $(MSG) $(NOPE) $HOME"],
        ["--mode=fast"],
    )


def test_missing_references_are_errors_unless_optional(tmp_path: Path) -> None:
    pod, _ = load(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - name: app
            image: simple-webapp
            env:
            - name: COLOR
              valueFrom: {configMapKeyRef: {name: app-config, key: color}}
        """,
    )
    # the loader refuses such a pod; the runtime may still meet one (e.g. a later edit)
    with pytest.raises(ResolveError, match='configmap "app-config" not found'):
        resolve_env(pod, pod.containers[0], Bundle())


def test_keys_that_cannot_be_variable_names_are_skipped(tmp_path: Path) -> None:
    pod, _ = load(
        tmp_path,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - name: app
            image: simple-webapp
            envFrom:
            - configMapRef: {name: raw, optional: true}
        """,
    )
    raw = KeyValueObject(
        "ConfigMap", "raw", "default", {"A=B": b"x", "OK": b"\xffy"}, Source("t", 1)
    )
    env = resolve_env(pod, pod.containers[0], Bundle(config_maps={("default", "raw"): raw}))
    assert env == {"OK": "\udcffy"}  # bytes that are not UTF-8 pass through os.fsencode intact
    assert os.fsencode(env["OK"]) == b"\xffy"


# --- projected volume files --------------------------------------------------------------------

VOLUMES_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: shop, tier: "front\\"end"}
  annotations: {note: "two\\nlines"}
spec:
  containers:
  - name: app
    image: simple-webapp
    resources:
      limits: {memory: 128Mi}
  volumes:
  - name: all-config
    configMap: {name: app-config}
  - name: some-config
    configMap:
      name: app-config
      defaultMode: 0400
      items:
      - {key: app.yaml, path: conf/app.yaml}
      - {key: mode, path: mode.txt, mode: 0600}
  - name: creds
    secret: {secretName: creds, items: [{key: password, path: pw}]}
  - name: maybe
    configMap: {name: absent, optional: true}
  - name: partial
    configMap:
      name: app-config
      optional: true
      items: [{key: nope, path: nope}, {key: color, path: color}]
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
      - {path: ./name, fieldRef: {fieldPath: metadata.name}, mode: 0444}
      - {path: mem, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}
  - name: both
    projected:
      defaultMode: 0440
      sources:
      - configMap: {name: app-config, items: [{key: color, path: color}]}
      - secret: {name: creds}
      - downwardAPI: {items: [{path: pod, fieldRef: {fieldPath: metadata.name}}]}
"""


def test_projected_volume_files(tmp_path: Path) -> None:
    pod, bundle = load(tmp_path, VOLUMES_POD)
    files = {v.name: projected_files(pod, v, bundle) for v in pod.volumes}
    assert files["all-config"] == {
        "mode": (b"fast", 0o644),
        "color": (b"blue", 0o644),
        "app.yaml": (b"port: 8080\n", 0o644),
        "logo.bin": (b"\x00\x01\x02", 0o644),
    }
    assert files["some-config"] == {
        "conf/app.yaml": (b"port: 8080\n", 0o400),
        "mode.txt": (b"fast", 0o600),
    }
    assert files["creds"] == {"pw": (b"s3cret", 0o644)}
    assert files["maybe"] == {}
    assert files["partial"] == {"color": (b"blue", 0o644)}
    assert files["info"] == {
        "labels": (b'app="shop"\ntier="front\\"end"', 0o644),
        "annotations": (b'note="two\\nlines"', 0o644),
        "name": (b"web", 0o444),
        "mem": (b"128", 0o644),
    }
    assert files["both"] == {
        "color": (b"blue", 0o440),
        "user": (b"admin", 0o440),
        "password": (b"s3cret", 0o440),
        "pod": (b"web", 0o440),
    }
    # the loader accepted projected volumes without a warning
    assert bundle.warnings == []


def test_a_missing_key_is_an_error_for_the_runtime(tmp_path: Path) -> None:
    pod, bundle = load(tmp_path, VOLUMES_POD)
    del bundle.config_maps[("default", "app-config")].data["mode"]
    some_config = next(v for v in pod.volumes if v.name == "some-config")
    with pytest.raises(ResolveError, match="configmap references non-existent config key: mode"):
        projected_files(pod, some_config, bundle)
