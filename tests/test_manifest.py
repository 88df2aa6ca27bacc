"""Loading manifests: what a user sees for good files (the model) and bad ones (the messages)."""

from __future__ import annotations

import io
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from podkit.manifest.errors import ManifestError
from podkit.manifest.load import load_files
from podkit.manifest.model import Bundle

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so messages name files as a user typed them: `bad.yaml: ...`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name: str, text: str) -> str:
    Path(name).write_text(textwrap.dedent(text).lstrip("\n"))
    return name


def problems(*files: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_files(list(files))
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return str(caught.value).splitlines()


def load(*files: str) -> Bundle:
    return load_files(list(files))


POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: app
    image: simple-webapp
"""


# --- good files ----------------------------------------------------------------------------


def test_the_classic_example_loads_with_no_problem_and_no_warning() -> None:
    bundle = load(str(EXAMPLES / "pod-definition.yaml"))
    assert bundle.warnings == []
    (pod,) = bundle.pods
    assert pod.name == "simple-webapp"
    assert pod.labels == {"name": "simple-webapp"}
    assert [c.name for c in pod.containers] == ["simple-webapp", "log-agent"]
    assert [c.image for c in pod.containers] == ["simple-webapp", "log-agent"]
    assert pod.containers[0].ports[0].container_port == 8080
    assert pod.containers[0].ports[0].protocol == "TCP"


def test_pod_configmap_and_secret_in_one_file_build_the_model() -> None:
    write(
        "app.yaml",
        """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: app-config
        data:
          LOG_LEVEL: debug
          app.yaml: |
            port: 8080
        binaryData:
          logo.png: iVBORw0K
        ---
        apiVersion: v1
        kind: Secret
        metadata:
          name: creds
        data:
          username: YWRtaW4=
          password: b2xk
        stringData:
          password: s3cret
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: shop
          namespace: default
          annotations:
            team: payments
        spec:
          hostname: shop-host
          restartPolicy: OnFailure
          terminationGracePeriodSeconds: 5
          initContainers:
          - name: migrate
            image: tools
            command: ["migrate", "--up"]
          - name: proxy
            image: ambassador
            restartPolicy: Always
          containers:
          - name: web
            image: simple-webapp
            args: ["--port", "8080"]
            workingDir: /srv
            ports:
            - containerPort: 8080
              name: http
              hostPort: 18080
              hostIP: 127.0.0.1
            - containerPort: 5353
              protocol: UDP
            env:
            - name: LEVEL
              valueFrom:
                configMapKeyRef: {name: app-config, key: LOG_LEVEL}
            envFrom:
            - secretRef: {name: creds}
              prefix: DB_
            volumeMounts:
            - name: config
              mountPath: /etc/app
              readOnly: true
            - name: scratch
              mountPath: /tmp/work
              subPath: web
            resources:
              limits: {cpu: 500m, memory: 64Mi}
          volumes:
          - name: config
            configMap:
              name: app-config
              defaultMode: 0440
          - name: scratch
            emptyDir: {}
          - name: plain
        """,
    )
    bundle = load("app.yaml")
    assert bundle.warnings == []

    config = bundle.config_maps[("default", "app-config")]
    assert config.data == {
        "LOG_LEVEL": b"debug",
        "app.yaml": b"port: 8080\n",
        "logo.png": b"\x89PNG\r\n",
    }
    secret = bundle.secrets[("default", "creds")]
    assert secret.data == {"username": b"admin", "password": b"s3cret"}  # stringData wins

    (pod,) = bundle.pods
    assert (pod.name, pod.namespace, pod.hostname) == ("shop", "default", "shop-host")
    assert uuid.UUID(pod.uid).version == 4
    assert pod.annotations == {"team": "payments"}
    assert pod.restart_policy == "OnFailure"
    assert pod.termination_grace_period_seconds == 5
    assert pod.node_name == os.uname().nodename
    assert pod.service_account_name == "default"
    assert pod.source.file == "app.yaml" and pod.source.doc == 3

    migrate, proxy = pod.init_containers
    assert (migrate.is_init, migrate.restart_policy, migrate.command) == (
        True,
        None,
        ["migrate", "--up"],
    )
    assert (proxy.is_init, proxy.restart_policy) == (True, "Always")

    (web,) = pod.containers
    assert (web.is_init, web.args, web.working_dir) == (False, ["--port", "8080"], "/srv")
    http, dns = web.ports
    assert (http.container_port, http.name, http.host_port, http.host_ip) == (
        8080,
        "http",
        18080,
        "127.0.0.1",
    )
    assert (dns.container_port, dns.protocol, dns.host_port) == (5353, "UDP", None)
    config_mount, scratch_mount = web.volume_mounts
    assert (config_mount.mount_path, config_mount.read_only, config_mount.sub_path) == (
        "/etc/app",
        True,
        None,
    )
    assert (scratch_mount.read_only, scratch_mount.sub_path) == (False, "web")
    assert web.env == [
        {
            "name": "LEVEL",
            "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "LOG_LEVEL"}},
        }
    ]
    assert web.env_from == [{"secretRef": {"name": "creds"}, "prefix": "DB_"}]
    assert web.resources == {"limits": {"cpu": "500m", "memory": "64Mi"}}

    config_volume, scratch, plain = pod.volumes
    assert (config_volume.kind, config_volume.source) == (
        "configMap",
        {"name": "app-config", "defaultMode": 0o440},
    )
    assert (scratch.kind, scratch.source) == ("emptyDir", {})
    assert (plain.kind, plain.source) == ("emptyDir", {})  # no source defaults to emptyDir


def test_pod_defaults_and_given_uid() -> None:
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          namespace: shop
          uid: 0b9c6d0e-1111-4222-8333-444455556666
        spec:
          nodeName: node-7
          serviceAccountName: robot
          containers:
          - name: app
            image: simple-webapp
        """,
    )
    (pod,) = load("pod.yaml").pods
    assert pod.uid == "0b9c6d0e-1111-4222-8333-444455556666"
    assert (pod.namespace, pod.hostname, pod.node_name) == ("shop", "web", "node-7")
    assert (pod.restart_policy, pod.termination_grace_period_seconds) == ("Always", 30)
    assert pod.service_account_name == "robot"


def test_a_long_pod_name_gives_a_63_character_hostname() -> None:
    name = "a" * 62 + "-" + "b" * 10
    write("pod.yaml", POD.replace("name: web", f"name: {name}"))
    (pod,) = load("pod.yaml").pods
    assert pod.hostname == "a" * 62  # cut to 63, then the trailing '-' dropped, as the kubelet


def test_an_image_that_is_not_built_in_and_has_no_command_is_not_a_manifest_error() -> None:
    write("pod.yaml", POD.replace("image: simple-webapp", "image: registry.example/app:1.2"))
    assert load("pod.yaml").pods[0].containers[0].image == "registry.example/app:1.2"


def test_empty_documents_are_skipped_and_several_files_are_merged() -> None:
    write("a.yaml", "---\n# only a comment\n---\n" + textwrap.dedent(POD) + "---\n")
    write("b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n")
    bundle = load("a.yaml", "b.yaml")
    assert [p.name for p in bundle.pods] == ["web"]
    assert bundle.pods[0].source.doc == 2  # the first `---` opens document 1
    assert list(bundle.config_maps) == [("default", "c")]


def test_a_directory_stands_for_its_manifest_files(in_tmp: Path) -> None:
    Path("manifests").mkdir()
    write("manifests/pod.yaml", POD)
    write("manifests/config.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    write("manifests/notes.txt", "not yaml: [")
    bundle = load("manifests")
    assert [p.name for p in bundle.pods] == ["web"]
    assert ("default", "c") in bundle.config_maps


def test_dash_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(textwrap.dedent(POD)))
    assert [p.name for p in load("-").pods] == ["web"]


def test_a_list_of_objects_is_accepted() -> None:
    write(
        "list.yaml",
        """
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: ConfigMap
          metadata: {name: settings}
          data: {mode: fast}
        - apiVersion: v1
          kind: Pod
          metadata: {name: web}
          spec:
            containers:
            - name: app
              image: simple-webapp
              imagee: typo
        """,
    )
    assert problems("list.yaml") == [
        "list.yaml: document 1: items[1].spec.containers[0].imagee (line 15): "
        'unknown field "imagee" (did you mean "image"?)'
    ]


def test_timestamps_stay_text_as_kubectl_get_writes_them() -> None:
    write(
        "pod.yaml",
        POD.replace("  name: web\n", "  name: web\n  creationTimestamp: 2024-05-01T10:00:00Z\n"),
    )
    (pod,) = load("pod.yaml").pods
    assert pod.raw["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"


# --- messages ------------------------------------------------------------------------------


def test_a_wrong_type_names_file_document_field_and_line() -> None:
    write(
        "bad.yaml",
        """
        # a comment first, so lines are counted from the file, not the document
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          containers:
          - name: app
            image: simple-webapp
            ports:
            - name: http
              containerPort: x8080
        """,
    )
    assert problems("bad.yaml") == [
        "bad.yaml: document 1: spec.containers[0].ports[0].containerPort (line 12): "
        "'x8080' is not of type 'integer'"
    ]


def test_strict_schema_catches_typos_and_suggests_the_field() -> None:
    write("bad.yaml", POD.replace("    image: simple-webapp", "    imagee: simple-webapp"))
    assert problems("bad.yaml") == [
        "bad.yaml: document 1: spec.containers[0].image (line 7): required field is missing",
        'bad.yaml: document 1: spec.containers[0].imagee (line 8): unknown field "imagee" '
        '(did you mean "image"?)',
    ]


def test_a_number_where_text_is_expected_says_to_quote_it() -> None:
    write("bad.yaml", POD + "    env:\n    - name: PORT\n      value: 8080\n")
    assert problems("bad.yaml") == [
        "bad.yaml: document 1: spec.containers[0].env[0].value (line 11): "
        "8080 is not of type 'string' (put it in quotes)"
    ]


def test_every_problem_in_every_file_is_reported_at_once() -> None:
    write(
        "one.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          restartPolicy: Sometimes
          containers:
          - name: app
            image: simple-webapp
            resources:
              limits: {cpu: lots}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        """,
    )
    write("two.yaml", "kind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n---\nfoo: [\n")
    assert problems("one.yaml", "two.yaml", "missing.yaml") == [
        'one.yaml: document 1: spec.restartPolicy (line 6): unsupported value "Sometimes"; '
        'supported values: "Always", "OnFailure", "Never"',
        "one.yaml: document 1: spec.containers[0].resources.limits.cpu (line 11): 'lots' is not "
        "a valid quantity: quantities must match the regular expression "
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        "one.yaml: document 2: kind (line 14): kind Deployment is not supported by podkit run; "
        "supported: Pod, ConfigMap, Secret, Service",
        "two.yaml: document 1: apiVersion (line 1): required field is missing "
        "(a Pod is apiVersion: v1)",
        "two.yaml: document 1: spec.containers (line 3): a pod needs at least one container",
        "two.yaml: document 2: line 6: invalid YAML: while parsing a flow node, "
        "did not find expected node content",
        "missing.yaml: cannot read: No such file or directory",
    ]


def test_a_valid_pod_is_not_returned_when_another_document_is_bad() -> None:
    write("mixed.yaml", textwrap.dedent(POD) + "---\n" + "apiVersion: v1\nkind: Pod\n")
    assert problems("mixed.yaml") == [
        "mixed.yaml: document 2: metadata.name (line 10): required field is missing",
        "mixed.yaml: document 2: spec.containers (line 10): a pod needs at least one container",
    ]


def test_yaml_syntax_error_gives_the_line() -> None:
    write("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n   labels: x\n")
    assert problems("bad.yaml") == [
        "bad.yaml: document 1: line 5: invalid YAML: mapping values are not allowed in this context"
    ]


def test_a_document_that_is_not_an_object() -> None:
    write("bad.yaml", "- just\n- a list\n")
    assert problems("bad.yaml") == [
        "bad.yaml: document 1: line 1: a document must be a Kubernetes object (a mapping), "
        "not a list"
    ]


def test_a_duplicate_key_is_an_error_as_in_kubectl() -> None:
    write("bad.yaml", POD.replace("    image: simple-webapp", "    image: a\n    image: b"))
    assert problems("bad.yaml") == [
        'bad.yaml: document 1: spec.containers[0].image (line 9): duplicate key "image" '
        "(first on line 8)"
    ]


def test_unsupported_kind() -> None:
    write("ing.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n")
    assert problems("ing.yaml") == [
        "ing.yaml: document 1: kind (line 2): kind Ingress is not supported by podkit run; "
        "supported: Pod, ConfigMap, Secret, Service"
    ]


def test_duplicate_container_names_across_containers_and_init_containers() -> None:
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          initContainers:
          - name: app
            image: tools
          containers:
          - name: app
            image: simple-webapp
          - name: Log_Agent
            image: log-agent
        """,
    )
    assert problems("pod.yaml") == [
        # as Kubernetes does, the init container is named as the duplicate
        "pod.yaml: document 1: spec.initContainers[0].name (line 7): "
        'duplicate container name "app" (also spec.containers[0].name, line 10)',
        "pod.yaml: document 1: spec.containers[1].name (line 12): a lowercase RFC 1123 label "
        "must consist of lower case alphanumeric characters or '-', and must start and end with "
        "an alphanumeric character (at most 63 characters)",
    ]


def test_volumes_mounts_must_name_a_declared_volume_and_names_are_unique() -> None:
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          containers:
          - name: app
            image: simple-webapp
            volumeMounts:
            - name: logz
              mountPath: /var/log/app
          volumes:
          - name: logs
            emptyDir: {}
          - name: logs
            hostPath: {path: /tmp}
        """,
    )
    assert problems("pod.yaml") == [
        'pod.yaml: document 1: spec.containers[0].volumeMounts[0].name (line 10): volume "logz" '
        'is not declared in spec.volumes (did you mean "logs"?)',
        'pod.yaml: document 1: spec.volumes[1].name (line 15): duplicate volume name "logs" '
        "(also spec.volumes[0].name, line 13)",
    ]


def test_a_container_without_a_name_does_not_break_the_other_checks() -> None:
    # Each problem is reported; before, the unnamed container made the containerName check
    # raise a TypeError instead of listing them.
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - image: busybox
            env:
            - name: CPU
              valueFrom: {resourceFieldRef: {containerName: nope, resource: limits.cpu}}
        """,
    )
    assert problems("pod.yaml") == [
        "pod.yaml: document 1: spec.containers[0].name (line 6): required field is missing",
        "pod.yaml: document 1: spec.containers[0].env[0].valueFrom.resourceFieldRef.containerName "
        '(line 9): container "nope" not found in this pod',
    ]


def test_references_to_configmaps_and_secrets_must_be_loaded_unless_optional() -> None:
    write(
        "config.yaml",
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: app-config}
        data: {LEVEL: debug}
        binaryData: {blob: AAEC}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: creds, namespace: other}
        stringData: {token: t}
        """,
    )
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          containers:
          - name: app
            image: simple-webapp
            env:
            - name: A
              valueFrom: {configMapKeyRef: {name: app-config, key: LEVEL}}
            - name: B
              valueFrom: {configMapKeyRef: {name: app-config, key: COLOR}}
            - name: C
              valueFrom: {secretKeyRef: {name: creds, key: token}}
            - name: D
              valueFrom: {configMapKeyRef: {name: app-config, key: blob}}
            - name: E
              valueFrom: {secretKeyRef: {name: creds, key: token, optional: true}}
            envFrom:
            - configMapRef: {name: app-conf}
            - secretRef: {name: absent, optional: true}
            volumeMounts:
            - {name: cfg, mountPath: /etc/app}
          volumes:
          - name: cfg
            configMap:
              name: app-config
              items:
              - {key: LEVEL, path: level}
              - {key: missing, path: missing}
          - name: certs
            secret: {secretName: tls}
          - name: maybe
            secret: {secretName: tls, optional: true}
        """,
    )
    assert problems("config.yaml", "pod.yaml") == [
        "pod.yaml: document 1: spec.containers[0].env[1].valueFrom.configMapKeyRef.key (line 13): "
        'key "COLOR" not found in ConfigMap "default/app-config" (it has: LEVEL, blob)',
        "pod.yaml: document 1: spec.containers[0].env[2].valueFrom.secretKeyRef.name (line 15): "
        'Secret "creds" not found in namespace "default" (there is one in namespace "other"): '
        "it is not in the loaded files (add its file, or set optional: true)",
        "pod.yaml: document 1: spec.containers[0].env[3].valueFrom.configMapKeyRef.key (line 17): "
        'key "blob" of ConfigMap "app-config" is in binaryData, which env cannot use',
        "pod.yaml: document 1: spec.containers[0].envFrom[0].configMapRef.name (line 21): "
        'ConfigMap "app-conf" not found in namespace "default" (did you mean "app-config"?): '
        "it is not in the loaded files (add its file, or set optional: true)",
        'pod.yaml: document 1: spec.volumes[0].configMap.items[1].key (line 31): key "missing" '
        'not found in ConfigMap "default/app-config" (it has: LEVEL, blob)',
        'pod.yaml: document 1: spec.volumes[1].secret.secretName (line 33): Secret "tls" not '
        'found in namespace "default": it is not in the loaded files (add its file, or set '
        "optional: true)",
    ]


def test_two_containers_may_not_claim_the_same_port() -> None:
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          initContainers:
          - name: setup
            image: tools
            ports: [{containerPort: 8080}]
          containers:
          - name: app
            image: simple-webapp
            ports: [{containerPort: 8080}, {containerPort: 53, protocol: UDP}]
          - name: agent
            image: log-agent
            ports: [{containerPort: 8080}, {containerPort: 53}]
        """,
    )
    # a plain init container has finished before the others start: no conflict with it
    assert problems("pod.yaml") == [
        "pod.yaml: document 1: spec.containers[1].ports[0].containerPort (line 16): port "
        '8080/TCP is already claimed by container "app" '
        "(spec.containers[0].ports[0].containerPort, line 13)"
    ]


def test_two_pods_with_one_name() -> None:
    write("a.yaml", POD)
    write("b.yaml", POD)
    assert problems("a.yaml", "b.yaml") == [
        'b.yaml: document 1: metadata.name (line 4): Pod "default/web" is defined twice '
        "(first in a.yaml (document 1))"
    ]


def test_two_config_maps_with_one_name_in_one_list() -> None:
    write(
        "list.yaml",
        """
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
        """,
    )
    assert problems("list.yaml") == [
        'list.yaml: document 1: items[1].metadata.name (line 5): ConfigMap "default/c" is '
        "defined twice (first in items[0].metadata.name, line 4)"
    ]


def test_secret_data_must_be_base64() -> None:
    write(
        "secret.yaml",
        """
        apiVersion: v1
        kind: Secret
        metadata: {name: creds}
        data:
          password: hunter2!
        """,
    )
    assert problems("secret.yaml") == [
        "secret.yaml: document 1: data.password (line 5): is not valid base64; put plain text "
        "under stringData instead"
    ]


def test_config_keys_must_be_safe_file_names() -> None:
    write(
        "config.yaml",
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c}
        data:
          ok.yaml: fine
          ..data: x
          "a/b": y
        """,
    )
    assert problems("config.yaml") == [
        "config.yaml: document 1: data[..data] (line 6): must not start with '..'",
        "config.yaml: document 1: data[a/b] (line 7): a valid config key must consist of "
        "alphanumeric characters, '-', '_' or '.'",
    ]


def test_unsafe_item_paths_are_rejected() -> None:
    write(
        "pod.yaml",
        textwrap.dedent(POD)
        + """\
  volumes:
  - name: info
    downwardAPI:
      items:
      - path: ../../etc/passwd
        fieldRef: {fieldPath: metadata.name}
      - path: node
        fieldRef: {fieldPath: spec.nodeName}
""",
    )
    assert problems("pod.yaml") == [
        "pod.yaml: document 1: spec.volumes[0].downwardAPI.items[0].path (line 13): "
        "must not contain '..'",
        "pod.yaml: document 1: spec.volumes[0].downwardAPI.items[1].fieldRef.fieldPath "
        '(line 16): unsupported value "spec.nodeName"; supported values: "metadata.name", '
        '"metadata.namespace", "metadata.labels", "metadata.annotations", "metadata.uid"',
    ]


# --- warnings ------------------------------------------------------------------------------


def test_one_warning_lists_exactly_the_fields_podkit_ignores() -> None:
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: simple-webapp
          generateName: web-
          labels: {app: web}
          creationTimestamp: null
        spec:
          tolerations:
          - {key: dedicated, operator: Exists}
          securityContext: {}
          containers:
          - name: simple-webapp
            image: simple-webapp
            imagePullPolicy: IfNotPresent
            terminationMessagePolicy: File
            securityContext:
              seLinuxOptions: {level: "s0:c1"}
            livenessProbe:
              httpGet: {path: /healthz, port: 8080}
            env:
            - name: A
              value: b
            resources:
              limits: {memory: 64Mi}
          affinity:
            nodeAffinity: {}
          priorityClassName: high
          volumes:
          - name: cache
            emptyDir: {medium: Memory}
        status:
          phase: Pending
        """,
    )
    assert load("pod.yaml").warnings == [
        "pod simple-webapp: these fields are valid Kubernetes but not implemented by podkit and "
        "are ignored: metadata.generateName, spec.affinity, "
        "spec.containers[0].securityContext.seLinuxOptions, spec.priorityClassName, "
        "spec.tolerations"
    ]


def test_fields_left_at_their_kubernetes_default_are_not_warned_about() -> None:
    # what `kubectl run web --image=simple-webapp --dry-run=client -o yaml` writes
    write(
        "pod.yaml",
        """
        apiVersion: v1
        kind: Pod
        metadata:
          creationTimestamp: null
          labels: {run: web}
          name: web
        spec:
          containers:
          - image: simple-webapp
            name: web
            resources: {}
            tty: false
          dnsPolicy: ClusterFirst
          restartPolicy: Always
          hostIPC: true
        status: {}
        """,
    )
    assert load("pod.yaml").warnings == [
        "pod web: these fields are valid Kubernetes but not implemented by podkit and are "
        "ignored: spec.hostIPC"
    ]


# --- the fast validator agrees with jsonschema ----------------------------------------------


BROKEN = [
    POD.replace("image: simple-webapp", "image: 5"),
    POD.replace("image: simple-webapp", "imagee: x\n    ports: [{containerPort: 1.5}, {}]"),
    POD.replace("kind: Pod", "kind: Pod\nextra: 1").replace("apiVersion: v1", "apiVersion: v2"),
    POD + "    resources: {limits: {cpu: [1]}}\n    livenessProbe: {httpGet: {port: {}}}\n",
    POD + "    env: [{name: A, value: true}, {value: b}, 7]\n",
    POD + "  volumes: [{name: v, configMap: {items: [{key: k}]}, secret: 3}]\n",
]


@pytest.mark.parametrize("text", BROKEN)
def test_podkit_validator_reports_what_jsonschema_reports(text: str) -> None:
    import yaml

    from podkit.manifest import schema

    data = yaml.safe_load(textwrap.dedent(text))
    fast = schema.Validator(schema._load("pod-v1.json"), schema._definitions()["$defs"])
    reference = schema._JsonschemaValidator(schema._load("pod-v1.json"), schema._definitions())

    def summary(errors: object) -> list[tuple[object, ...]]:
        return sorted((e.path, e.validator, repr(e.instance)) for e in errors)  # type: ignore[attr-defined]

    assert summary(fast.iter_errors(data)) == summary(reference.iter_errors(data))
    assert summary(fast.iter_errors(data))  # each case is really broken


def test_a_schema_keyword_podkit_does_not_know_falls_back_to_jsonschema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from podkit.manifest import schema

    future = dict(schema._load("pod-v1.json"), minProperties=1)  # as a newer schema might
    validator = schema.Validator(future, schema._definitions()["$defs"])
    monkeypatch.setitem(schema._validators, "Pod", validator)
    write("bad.yaml", POD.replace("    image: simple-webapp", "    imagee: simple-webapp"))
    assert problems("bad.yaml") == [
        "bad.yaml: document 1: spec.containers[0].image (line 7): required field is missing",
        'bad.yaml: document 1: spec.containers[0].imagee (line 8): unknown field "imagee" '
        '(did you mean "image"?)',
    ]
    assert isinstance(schema._validators["Pod"], schema._JsonschemaValidator)


def test_the_cached_cut_of_the_definitions_is_complete_and_rebuilt_when_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orjson

    from podkit.manifest import schema

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    schema._definitions.cache_clear()
    try:
        cut = schema._definitions()
        files = list((tmp_path / "podkit").glob("k8s-definitions-*.json"))
        assert len(files) == 1
        full = orjson.loads((schema._schema_dir() / "_definitions.json").read_bytes())
        names = cut["$defs"]
        assert 0 < len(names) < len(full["$defs"]) / 2
        assert "io.k8s.api.core.v1.Probe" in names and "io.k8s.api.apps.v1.Deployment" not in names
        # Every $ref inside the cut resolves inside it, so no validation can miss a definition.
        refs = {ref.rsplit("/", 1)[1] for ref in _refs(cut["$defs"])}
        assert refs <= set(names)
        for name, definition in names.items():
            assert definition == full["$defs"][name]
        files[0].write_bytes(b"{ damaged")
        schema._definitions.cache_clear()
        assert schema._definitions() == cut
        assert orjson.loads(files[0].read_bytes()) == cut
    finally:
        schema._definitions.cache_clear()


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
