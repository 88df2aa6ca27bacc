"""examples/ambassador.yaml, end to end, as the README tells a user to run it: the webapp only
behind the ambassador's TLS, and its outbound calls balanced over two instances."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request

from podkit_harness import REPO, free_port, wait_for

EXAMPLE = REPO / "examples" / "ambassador.yaml"


def _example_ca(tmp_path) -> ssl.SSLContext:
    """The example's own certificate (it is self-signed) as the only trusted CA."""
    text = EXAMPLE.read_text()
    begin = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    pem = "\n".join(line.strip() for line in text[begin:end].splitlines()) + "\n"
    ctx = ssl.create_default_context(cadata=pem)
    return ctx


def _get(url: str, ctx: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_ambassador_example_terminates_tls_and_balances_egress(podkit, tmp_path):
    port = free_port()
    run = podkit("run", str(EXAMPLE), "-p", f"{port}:8443")
    run.wait_stderr(f"published on localhost:{port}")
    ctx = _example_ca(tmp_path)
    base = f"https://localhost:{port}"
    status, body = wait_for("the webapp behind TLS", lambda: _get(base + "/api/info", ctx), 20)
    assert status == 200
    assert json.loads(body)["container"] == "simple-webapp"
    # Plain HTTP on the published port is not the app: only TLS gets through.
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"simple-webapp" not in sock.recv(4096)
    # The app's outbound calls go through the ambassador's egress listener, round robin.
    seen = []
    for _ in range(4):
        status, body = wait_for(
            "an egress call", lambda: _get(base + "/api/call?path=/api/info", ctx), 10
        )
        assert status == 200, body
        seen.append(json.loads(body)["body"]["container"])
    assert sorted(set(seen)) == ["catalog-1", "catalog-2"]
    assert seen[0] != seen[1] and seen[1] != seen[2]
    assert run.stop() == 0
