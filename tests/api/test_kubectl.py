"""`podkit serve` driven by the real kubectl: discovery, apply (create, unchanged, configured),
get (tables, -o, selectors, -w), delete, validation and errors, as kubectl prints them."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_harness import KUBECTL, Served, start

from podkit_harness import wait_for

CM = 'apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}{labels}}}\ndata: {{a: "{a}"}}\n'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start(tmp_path_factory.mktemp("serve"))
    try:
        yield s
    finally:
        s.stop()


def cm(name: str, a: str = "1", labels: str = "") -> str:
    return CM.format(name=name, a=a, labels=f", labels: {{{labels}}}" if labels else "")


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_the_kubectl_is_the_projects_own() -> None:
    assert KUBECTL.is_file() and "site-packages" not in str(KUBECTL)
    out = subprocess.run([str(KUBECTL), "version", "--client"], capture_output=True, text=True)
    assert "Client Version: v1.37" in out.stdout


def test_kubectl_lists_the_system_namespaces(served: Served) -> None:
    got = served.kubectl("get", "namespaces")
    assert got.returncode == 0, got.stderr
    rows = table(got.stdout)
    assert rows[0] == ["NAME", "STATUS", "AGE"]
    assert [r[:2] for r in rows[1:]] == [
        ["default", "Active"],
        ["kube-node-lease", "Active"],
        ["kube-public", "Active"],
        ["kube-system", "Active"],
    ]
    assert (
        served.kubectl("get", "ns", "default", "-o", "jsonpath={.status.phase}").stdout == "Active"
    )


def test_apply_creates_then_leaves_unchanged_then_configures(served: Served) -> None:
    first = served.kubectl("apply", "-f", "-", stdin=cm("cfg"))
    assert (first.returncode, first.stdout.strip()) == (0, "configmap/cfg created"), first.stderr
    again = served.kubectl("apply", "-f", "-", stdin=cm("cfg"))
    assert again.stdout.strip() == "configmap/cfg unchanged"
    changed = served.kubectl("apply", "-f", "-", stdin=cm("cfg", a="2"))
    assert changed.stdout.strip() == "configmap/cfg configured", changed.stderr
    assert served.kubectl("get", "cm", "cfg", "-o", "jsonpath={.data.a}").stdout == "2"
    rows = table(served.kubectl("get", "configmaps").stdout)
    assert rows[0] == ["NAME", "DATA", "AGE"] and ["cfg", "1"] in [r[:2] for r in rows]
    doc = json.loads(served.kubectl("get", "cm", "cfg", "-o", "json").stdout)
    meta = doc["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"]
    assert int(meta["resourceVersion"]) > 0
    assert "kubectl.kubernetes.io/last-applied-configuration" in meta["annotations"]


def test_delete_then_get_says_not_found_as_kubectl_prints_it(served: Served) -> None:
    served.kubectl("apply", "-f", "-", stdin=cm("gone"))
    deleted = served.kubectl("delete", "cm", "gone")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == 'configmap "gone" deleted from default namespace'
    missing = served.kubectl("get", "cm", "gone")
    assert missing.returncode == 1
    assert missing.stderr.strip() == 'Error from server (NotFound): configmaps "gone" not found'


def test_unknown_fields_are_refused_strictly_dropped_with_a_warning_or_ignored(
    served: Served,
) -> None:
    bad = cm("strict") + "bogus: 1\n"
    refused = served.kubectl("apply", "-f", "-", stdin=bad)
    assert refused.returncode == 1
    assert 'strict decoding error: unknown field "bogus"' in refused.stderr
    assert served.kubectl("get", "cm", "strict").returncode == 1  # nothing half-made
    warned = served.kubectl("apply", "--validate=warn", "-f", "-", stdin=bad)
    assert warned.returncode == 0 and 'Warning: unknown field "bogus"' in warned.stderr
    stored = json.loads(served.kubectl("get", "cm", "strict", "-o", "json").stdout)
    assert "bogus" not in stored and stored["data"] == {"a": "1"}
    wrong_type = served.kubectl("apply", "-f", "-", stdin=cm("typed").replace('"1"', "[1]"))
    assert wrong_type.returncode == 1 and "cannot be handled as a ConfigMap" in wrong_type.stderr


def test_an_invalid_name_gets_the_apiservers_invalid_line(served: Served) -> None:
    got = served.kubectl("apply", "-f", "-", stdin=cm("Bad_Name"))
    assert got.returncode == 1
    assert got.stderr.startswith(
        'The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
        "a lowercase RFC 1123 subdomain"
    )


def test_secrets_store_string_data_as_data(served: Served) -> None:
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {key: s3cr3t}\n"
    assert served.kubectl("apply", "-f", "-", stdin=secret).returncode == 0
    doc = json.loads(served.kubectl("get", "secret", "token", "-o", "json").stdout)
    assert doc["data"] == {"key": "czNjcjN0"} and doc["type"] == "Opaque"
    assert "stringData" not in doc
    assert table(served.kubectl("get", "secrets").stdout)[1][:3] == ["token", "Opaque", "1"]


def test_namespaces_hold_objects_and_take_them_when_deleted(served: Served) -> None:
    missing = served.kubectl("apply", "-n", "team", "-f", "-", stdin=cm("in-team"))
    assert missing.returncode == 1 and 'namespaces "team" not found' in missing.stderr
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
    assert served.kubectl("apply", "-f", "-", stdin=ns).returncode == 0
    assert served.kubectl("apply", "-n", "team", "-f", "-", stdin=cm("in-team")).returncode == 0
    everywhere = table(served.kubectl("get", "cm", "-A").stdout)
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"] and ["team", "in-team"] in [
        r[:2] for r in everywhere
    ]
    assert served.kubectl("delete", "namespace", "team").returncode == 0
    after = served.kubectl("get", "cm", "-n", "team")
    assert after.stderr.strip() == "No resources found in team namespace."


def test_label_and_field_selectors_filter_lists(served: Served) -> None:
    served.kubectl("apply", "-f", "-", stdin=cm("red", labels="colour: red, tier: web"))
    served.kubectl("apply", "-f", "-", stdin=cm("blue", labels="colour: blue, tier: web"))

    def names(*args: str) -> list[str]:
        got = served.kubectl("get", "cm", *args, "-o", "jsonpath={.items[*].metadata.name}")
        assert got.returncode == 0, got.stderr
        return sorted(got.stdout.split())

    assert names("-l", "colour=red") == ["red"]
    assert names("-l", "tier=web,colour!=red") == ["blue"]
    assert names("-l", "colour in (red,blue)") == ["blue", "red"]
    assert names("--field-selector", "metadata.name=blue") == ["blue"]


def test_a_watch_shows_writes_as_they_happen(served: Served) -> None:
    watch = served.kubectl_running("get", "cm", "-w", "--request-timeout=0")
    try:
        assert watch.stdout is not None
        header = watch.stdout.readline()
        assert header.split()[:3] == ["NAME", "DATA", "AGE"]
        served.kubectl("apply", "-f", "-", stdin=cm("watched"))
        line = wait_for("the new ConfigMap in the watch", lambda: watch.stdout.readline(), 20)
        while not line.startswith("watched"):  # the existing ones come first
            line = watch.stdout.readline()
        assert line.split()[:2] == ["watched", "1"]
    finally:
        watch.kill()
        watch.wait()


def test_a_stale_resource_version_is_a_conflict(served: Served) -> None:
    served.kubectl("apply", "-f", "-", stdin=cm("raced"))
    doc = json.loads(served.kubectl("get", "cm", "raced", "-o", "json").stdout)
    served.kubectl("apply", "-f", "-", stdin=cm("raced", a="2"))  # moves it on
    doc["data"] = {"a": "3"}
    stale = served.kubectl("replace", "-f", "-", stdin=json.dumps(doc))
    assert stale.returncode == 1
    assert "Error from server (Conflict)" in stale.stderr
    assert 'Operation cannot be fulfilled on configmaps "raced"' in stale.stderr


def test_kubectl_create_generators_send_protobuf_and_it_is_read(served: Served) -> None:
    made = served.kubectl(
        "create", "configmap", "proto", "--from-literal=a=b", "--from-literal=c=d"
    )
    assert made.returncode == 0, made.stderr
    doc = json.loads(served.kubectl("get", "cm", "proto", "-o", "json").stdout)
    assert doc["data"] == {"a": "b", "c": "d"} and doc["metadata"]["uid"]
    secret = served.kubectl("create", "secret", "generic", "pw", "--from-literal=user=admin")
    assert secret.returncode == 0, secret.stderr
    got = json.loads(served.kubectl("get", "secret", "pw", "-o", "json").stdout)
    assert (got["data"], got["type"]) == ({"user": "YWRtaW4="}, "Opaque")
    assert served.kubectl("create", "namespace", "made").returncode == 0
    assert served.kubectl("get", "ns", "made", "-o", "jsonpath={.status.phase}").stdout == "Active"
    taken = served.kubectl("create", "namespace", "made")
    assert (
        taken.stderr.strip()
        == 'Error from server (AlreadyExists): namespaces "made" already exists'
    )


def test_requests_need_the_client_certificate_and_the_kubeconfig_is_private(
    served: Served,
) -> None:
    ca = served.state / "serve" / "pki" / "ca.crt"
    ctx = ssl.create_default_context(cafile=str(ca))  # the server's name is checked, too
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{served.url}/api/v1/namespaces", context=ctx, timeout=5)
    assert refused.value.code == 401
    body = json.loads(refused.value.read())
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)
    assert stat.S_IMODE(os.stat(served.kubeconfig).st_mode) == 0o600
    printed = subprocess.run(
        [str(Path(KUBECTL).parent / "podkit"), "kubeconfig"],
        capture_output=True,
        text=True,
        env={**os.environ, "PODKIT_STATE_DIR": str(served.state)},
    )
    assert printed.stdout == served.kubeconfig.read_text()
    assert "current-context: podkit" in printed.stdout


def test_the_official_python_client_lists_creates_and_watches(served: Served) -> None:
    from kubernetes import client, config, watch

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(served.kubeconfig)))
    names = [ns.metadata.name for ns in api.list_namespace().items]
    assert "kube-system" in names
    start = api.list_namespaced_config_map("default").metadata.resource_version
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-python"}}
    made = api.create_namespaced_config_map("default", {**body, "data": {"k": "v"}})
    api.patch_namespaced_config_map("from-python", "default", {"data": {"k": "w"}})
    api.delete_namespaced_config_map("from-python", "default")
    seen = [
        (e["type"], e["object"].metadata.name, (e["object"].data or {}).get("k"))
        for e in watch.Watch().stream(
            api.list_namespaced_config_map,
            "default",
            resource_version=start,
            timeout_seconds=1,
        )
        if e["object"].metadata.name == "from-python"
    ]
    assert seen == [
        ("ADDED", "from-python", "v"),
        ("MODIFIED", "from-python", "w"),
        ("DELETED", "from-python", "w"),
    ]
    assert int(made.metadata.resource_version) > int(start)


def test_the_node_the_service_accounts_and_the_served_kinds(served: Served) -> None:
    nodes = table(served.kubectl("get", "nodes").stdout)
    assert nodes[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert nodes[1][0] == os.uname().nodename and nodes[1][1] == "Ready"
    node = json.loads(served.kubectl("get", "node", os.uname().nodename, "-o", "json").stdout)
    assert node["status"]["capacity"]["cpu"] == str(os.cpu_count())
    accounts = table(served.kubectl("get", "serviceaccounts", "-n", "kube-system").stdout)
    assert accounts[1][0] == "default"  # each namespace gets its own
    kinds = {(row[0], row[-3]) for row in table(served.kubectl("api-resources").stdout)[1:]}
    assert kinds == {
        ("configmaps", "v1"), ("events", "v1"), ("namespaces", "v1"), ("nodes", "v1"),
        ("pods", "v1"), ("secrets", "v1"), ("serviceaccounts", "v1"),
        ("events", "events.k8s.io/v1"), ("deployments", "apps/v1"), ("replicasets", "apps/v1"),
        ("jobs", "batch/v1"), ("services", "v1"), ("endpointslices", "discovery.k8s.io/v1"),
    }  # fmt: skip
    assert served.kubectl("api-versions").stdout.split() == [
        "apps/v1", "batch/v1", "discovery.k8s.io/v1", "events.k8s.io/v1", "v1",
    ]  # fmt: skip


EVENT_V1 = """apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: deployed}
eventTime: "2026-01-02T03:04:05.000000Z"
reportingController: example.com/deployer
reportingInstance: deployer-1
action: Deploy
reason: Deployed
type: Normal
note: version 2 is out
regarding: {kind: Pod, name: web, namespace: default}
"""


def test_events_are_served_in_both_api_versions_from_one_object(served: Served) -> None:
    made = served.kubectl("apply", "-f", "-", stdin=EVENT_V1)
    assert made.stdout.strip() == "event.events.k8s.io/deployed created", made.stderr
    again = served.kubectl("apply", "-f", "-", stdin=EVENT_V1.replace("version 2 is", "v2 is"))
    assert again.stdout.strip() == "event.events.k8s.io/deployed configured", again.stderr
    core = json.loads(served.kubectl("get", "event", "deployed", "-o", "json").stdout)
    assert (core["apiVersion"], core["message"], core["reportingComponent"]) == (
        "v1", "v2 is out", "example.com/deployer",
    )  # fmt: skip
    assert core["involvedObject"] == {"kind": "Pod", "name": "web", "namespace": "default"}
    # A core write shows in the new version under its new names, and in its watch.
    served.kubectl("patch", "event", "deployed", "--type=merge", "-p", '{"message": "v3"}')
    v1 = json.loads(served.kubectl("get", "events.events.k8s.io", "deployed", "-o", "json").stdout)
    assert (v1["apiVersion"], v1["note"], v1["regarding"]["name"]) == (
        "events.k8s.io/v1", "v3", "web",
    )  # fmt: skip
    assert "message" not in v1 and v1["metadata"]["uid"] == core["metadata"]["uid"]
    rows = table(served.kubectl("get", "events.events.k8s.io").stdout)
    assert rows[0] == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert ["Normal", "Deployed", "pod/web", "v3"] in [r[1:] for r in rows[1:]]
    # The new version's rules for a new Event: every missing field in one 422.
    bare = served.kubectl("create", "-f", "-", stdin=EVENT_V1.split("eventTime")[0])
    assert bare.returncode == 1
    assert bare.stderr.splitlines()[:6] == [
        'The Event "deployed" is invalid: ',
        "* eventTime: Required value",
        "* reportingController: Required value",
        "* reportingInstance: Required value",
        "* action: Required value",
        "* reason: Required value",
    ]
    served.kubectl("delete", "events.events.k8s.io", "deployed")
    assert served.kubectl("get", "event", "deployed").returncode == 1  # one object, gone


def test_the_status_subresource_changes_status_only(served: Served) -> None:
    node = os.uname().nodename
    patched = served.kubectl(
        "patch", "node", node, "--subresource=status", "--type=merge",
        "-p", json.dumps({"metadata": {"labels": {"via-status": "yes"}},
                          "status": {"capacity": {"pods": "7"}}}),
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    got = json.loads(served.kubectl("get", "node", node, "-o", "json").stdout)
    assert got["status"]["capacity"]["pods"] == "7"
    assert "via-status" not in got["metadata"]["labels"]  # only status goes through it
    served.kubectl("apply", "-f", "-", stdin=cm("statusless"))
    none = served.kubectl(
        "patch", "cm", "statusless", "--subresource=status", "--type=merge", "-p", "{}"
    )
    assert none.returncode == 1 and "could not find the requested resource" in none.stderr


def test_a_stale_discovery_cache_is_refreshed_when_a_kind_is_missing(
    served: Served, tmp_path: Path
) -> None:
    """kubectl keeps discovery on disk for hours; a server that serves more than the cache
    says (a newer podkit) is found by kubectl itself, which re-reads discovery on a miss."""
    import dataclasses
    import shutil

    fresh = dataclasses.replace(served, home=tmp_path)
    assert fresh.kubectl("get", "po").returncode == 0
    cache = next((tmp_path / ".kube/cache/discovery").iterdir())
    groups = json.loads((cache / "servergroups.json").read_text())
    groups["groups"] = [g for g in groups["groups"] if g["name"] != "events.k8s.io"]
    (cache / "servergroups.json").write_text(json.dumps(groups))
    shutil.rmtree(cache / "events.k8s.io")  # as a cache from before the group was served
    got = fresh.kubectl("get", "events.events.k8s.io", "-n", "kube-system")
    assert got.returncode == 0 and "No resources found" in got.stderr, got.stderr
    assert (cache / "events.k8s.io/v1/serverresources.json").is_file()


def test_a_server_dry_run_checks_everything_and_writes_nothing(served: Served) -> None:
    dry = served.kubectl("apply", "--dry-run=server", "-f", "-", stdin=cm("dry"))
    assert dry.stdout.strip() == "configmap/dry created (server dry run)", dry.stderr
    assert served.kubectl("get", "cm", "dry").returncode == 1
    bad = served.kubectl("apply", "--dry-run=server", "-f", "-", stdin=cm("dry") + "extra: 1\n")
    assert bad.returncode == 1 and 'unknown field "extra"' in bad.stderr


def test_racing_writers_lose_with_409_and_watchers_see_every_win_in_order(served: Served) -> None:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(served.kubeconfig)))
    api.create_namespaced_config_map("default", {"metadata": {"name": "contended"}, "data": {}})
    start = api.read_namespaced_config_map("contended", "default").metadata.resource_version
    wins: list[str] = []
    losses: list[int] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        for attempt in range(5):
            current = api.read_namespaced_config_map("contended", "default")
            current.data = {**(current.data or {}), f"w{i}": str(attempt)}  # a real change
            try:
                done = api.replace_namespaced_config_map("contended", "default", current)
            except ApiException as exc:
                with lock:
                    losses.append(exc.status)
                continue
            with lock:
                wins.append(done.metadata.resource_version)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = [
        e["object"].metadata.resource_version
        for e in watch.Watch().stream(
            api.list_namespaced_config_map,
            "default",
            resource_version=start,
            field_selector="metadata.name=contended",
            timeout_seconds=1,
        )
        if e["type"] == "MODIFIED"
    ]
    assert len(wins) + len(losses) == 100
    assert set(losses) <= {409} and losses  # 20 writers on one object: some lose
    assert seen == sorted(wins, key=int)  # every win, once, in order


def test_kubectl_explain_reads_the_schemas_validation_uses(served: Served) -> None:
    pod = served.kubectl("explain", "pod.spec.containers.name")
    assert pod.returncode == 0, pod.stderr
    assert "FIELD: name <string>" in pod.stdout
    assert "Name of the container specified as a DNS_LABEL" in pod.stdout
    data = served.kubectl("explain", "configmap.data")
    assert "FIELD: data <map[string]string>" in data.stdout


def test_finalizers_hold_a_deleted_object_until_the_last_is_removed(served: Served) -> None:
    held = cm("held").replace(
        "metadata: {name: held}", "metadata: {name: held, finalizers: [example.com/x]}"
    )
    assert served.kubectl("apply", "-f", "-", stdin=held).returncode == 0
    deleting = served.kubectl("delete", "cm", "held", "--wait=false")
    assert deleting.returncode == 0, deleting.stderr
    doc = json.loads(served.kubectl("get", "cm", "held", "-o", "json").stdout)
    assert doc["metadata"]["deletionTimestamp"] and doc["metadata"]["finalizers"] == [
        "example.com/x"
    ]
    released = served.kubectl(
        "patch", "cm", "held", "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    assert released.returncode == 0, released.stderr
    assert served.kubectl("get", "cm", "held").returncode == 1  # gone with its last finalizer


def test_a_watch_from_before_the_history_gets_410_gone(tmp_path: Path) -> None:
    from kubernetes import client, config, watch
    from kubernetes.client.rest import ApiException

    short = start(tmp_path, "--history", "10")
    try:
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(short.kubeconfig)))
        first = api.create_namespaced_config_map("default", {"metadata": {"name": "c0"}})
        for i in range(1, 25):
            api.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as gone:
            for _ in watch.Watch().stream(
                api.list_namespaced_config_map,
                "default",
                resource_version=first.metadata.resource_version,
                timeout_seconds=2,
            ):
                pass
        assert gone.value.status == 410
    finally:
        short.stop()


def test_discovery_is_aggregated_for_kubectl(served: Served, tmp_path: Path) -> None:
    import dataclasses

    fresh = dataclasses.replace(served, home=tmp_path)  # an empty discovery cache
    got = fresh.kubectl("get", "po", "-v=6")
    assert got.returncode == 0, got.stderr
    asked = [line for line in got.stderr.splitlines() if '"Response" verb="GET"' in line]
    assert any("/api?timeout" in line for line in asked)
    assert not any("/api/v1?timeout" in line for line in asked)  # v2 named every resource
    cached = json.loads(
        next(tmp_path.glob(".kube/cache/discovery/*/v1/serverresources.json")).read_text()
    )
    names = {r["name"] for r in cached["resources"]}
    assert {"pods", "pods/log", "pods/exec", "pods/portforward", "pods/status"} <= names
    assert "configmaps/status" not in names and "namespaces/status" in names


def test_lists_come_in_pages_and_collections_delete_by_selector(served: Served) -> None:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(served.kubeconfig)))
    api.create_namespace({"metadata": {"name": "paged"}})
    for i in range(7):
        body = {"metadata": {"name": f"p{i}", "labels": {"batch": "odd" if i % 2 else "even"}}}
        api.create_namespaced_config_map("paged", body)
    names, token, pages = [], None, 0
    while True:
        got = api.list_namespaced_config_map("paged", limit=3, _continue=token)
        names += [o.metadata.name for o in got.items]
        pages += 1
        token = got.metadata._continue
        if not token:
            break
        assert got.metadata.remaining_item_count == 8 - len(names)
    # Every namespace has its kube-root-ca.crt, as in a cluster (the service accounts' CA).
    every = ["kube-root-ca.crt", *(f"p{i}" for i in range(7))]
    assert (pages, names) == (3, every)
    chunked = served.kubectl("get", "cm", "-n", "paged", "--chunk-size=2", "-o", "name")
    assert chunked.stdout.split() == [f"configmap/{name}" for name in every]
    api.delete_collection_namespaced_config_map("paged", label_selector="batch=odd")
    left = [o.metadata.name for o in api.list_namespaced_config_map("paged").items]
    assert left == ["kube-root-ca.crt", "p0", "p2", "p4", "p6"]
