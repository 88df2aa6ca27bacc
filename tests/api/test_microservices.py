"""examples/microservices.yaml on podkit serve, as the README shows it: the webapp's pods (app,
log-agent, ambassador) call the catalog's instances through the ambassador, which finds them
by the headless Service's DNS name; the pods grow together; a rolling update of the catalog
under wrk load through its Service fails no request. As root (cluster IPs, DNS)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from serve_harness import Served, serving

from podkit_harness import REPO, http_get, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cluster IPs and DNS need root")
EXAMPLE = REPO / "examples" / "microservices.yaml"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("microservices")) as s:
        assert s.kubectl("apply", "-f", str(EXAMPLE)).returncode == 0
        for name in ("webapp", "catalog"):
            done = s.kubectl("rollout", "status", f"deployment/{name}", "--timeout=90s")
            assert done.returncode == 0, done.stdout + done.stderr
        yield s


def catalog_answering(url: str) -> str | None:
    code, body = http_get(url, timeout=3)
    if code != 200:
        return None
    return str(json.loads(body)["body"]["pod_name"])


def test_the_webapps_ambassador_spreads_calls_over_the_catalog(served: Served) -> None:
    url = "http://127.0.0.1:30080/api/call?path=/api/info"
    seen: set[str] = set()

    def both() -> bool:
        name = catalog_answering(url)
        if name is not None:
            seen.add(name)
        return len(seen) == 2

    wait_for("calls answered by both catalog pods", both, 30)
    assert all(name.startswith("catalog-") for name in seen)


def test_scaling_the_webapp_grows_the_pairs_together(served: Served) -> None:
    assert served.kubectl("scale", "deployment/webapp", "--replicas=5").returncode == 0
    done = served.kubectl("rollout", "status", "deployment/webapp", "--timeout=90s")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in
            served.kubectl("get", "pods", "-l", "app=webapp").stdout.splitlines()[1:]]  # fmt: skip
    assert [r[1:3] for r in rows] == [["3/3", "Running"]] * 5  # app, log-agent, ambassador


def test_a_rolling_update_under_load_fails_no_request(served: Served) -> None:
    svc = json.loads(served.kubectl("get", "svc", "catalog", "-o", "json").stdout)
    url = f"http://{svc['spec']['clusterIP']}/api/info"
    load = subprocess.Popen(["wrk", "-t2", "-c8", "-d10s", url], stdout=subprocess.PIPE, text=True)
    try:
        restarted = served.kubectl("rollout", "restart", "deployment/catalog")
        assert restarted.returncode == 0, restarted.stderr
        done = served.kubectl("rollout", "status", "deployment/catalog", "--timeout=60s")
        assert done.returncode == 0, done.stderr
        report = load.communicate(timeout=30)[0]
    finally:
        load.kill()
    total = int(re.search(r"(\d+) requests in", report)[1])  # type: ignore[index]
    assert total > 1000, report
    assert "Socket errors" not in report and "Non-2xx" not in report, report  # wrk says them
    sets = json.loads(served.kubectl("get", "rs", "-l", "app=catalog", "-o", "json").stdout)
    assert sorted(r["spec"]["replicas"] for r in sets["items"]) == [0, 2]  # it did roll
