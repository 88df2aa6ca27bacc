"""examples/adapter-oauth2.yaml, end to end, as the README tells a user to run it: simple-webapp
calls an OAuth2-protected API through the auth-adapter beside it, which gets the token from the
identity provider and adds it (oauth-demo stands in for the API and its identity provider)."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from log_agent_harness import ImageProcess, image_env
from podkit_harness import REPO, Podkit, free_port, http_get, wait_for

EXAMPLE = REPO / "examples" / "adapter-oauth2.yaml"
TOKEN_SHAPED = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def _client_secret() -> str:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    secret = next(d for d in docs if d["kind"] == "Secret")
    return str(secret["stringData"]["client_secret"])


def _events(run: Podkit, container: str, msg: str) -> list[dict[str, Any]]:
    return [e for e in run.events(container) if e.get("msg") == msg]


def test_adapter_oauth2_example_calls_the_api_with_a_token(podkit, state_dir) -> None:
    app_port, admin_port = free_port(), free_port()
    run = podkit("run", str(EXAMPLE), "-p", f"{app_port}:8080", "-p", f"{admin_port}:9902")
    try:
        run.wait_stderr(f"published on localhost:{app_port}")
        run.wait_stderr(f"published on localhost:{admin_port}")
        app, admin = f"http://localhost:{app_port}", f"http://localhost:{admin_port}"

        def api_call() -> dict[str, Any] | None:
            status, body = http_get(app + "/api/call?path=/orders")
            answer = json.loads(body) if status == 200 else None
            # Until the adapter holds a token it answers 503 (no_token), which the app passes on.
            return answer if answer and answer["upstream_status"] == 200 else None

        # The app's plain request reached the API with a bearer token the API accepts: its
        # answer names the client the adapter got the token for.
        answer = wait_for("the API's answer through the adapter", api_call, 30)
        assert answer["body"]["client_id"] == "demo-app"
        assert answer["body"]["path"] == "/api/orders"  # prefix / -> the URL's path /api/
        assert answer["body"]["time"].endswith("Z")
        again = api_call()  # a second call: the adapter's cached token
        assert again is not None and again["body"]["client_id"] == "demo-app"

        assert http_get(admin + "/readyz")[0] == 200
        # The kubelet-style readiness probe agrees: the adapter is ready once it holds a token.
        wait_for(
            "the auth-adapter container ready in the pod status",
            lambda: any(
                c["name"] == "auth-adapter" and c["ready"]
                for c in run.status()["status"].get("containerStatuses", [])
            ),
            20,
        )

        # The stand-in API saw Bearer tokens; one token served every call (cached by the adapter).
        def api_log() -> list[dict[str, Any]] | None:
            seen = [e for e in _events(run, "oauth-demo", "api") if e["status"] == 200]
            return seen if len(seen) >= 2 else None

        seen = wait_for("the API's log of both calls", api_log, 10)
        assert all(e["scheme"] == "Bearer" and e["client_id"] == "demo-app" for e in seen)
        issued = _events(run, "oauth-demo", "token issued")
        assert [e["auth_method"] for e in issued] == ["client_secret_basic"]
    finally:
        code = run.stop()
        print(run.text())  # shown by pytest when the test fails
    assert code == 0, run.text()

    # The client secret never shows in any container's output: not on the terminal stream, not
    # in the CRI log files podkit keeps per container.
    secret = _client_secret()
    cri_logs = list(state_dir.glob("pods/*/logs/*/*.log"))
    assert {p.parent.name for p in cri_logs} >= {"simple-webapp", "auth-adapter", "oauth-demo"}
    outputs = {"terminal": run.text()} | {str(p): p.read_text(errors="replace") for p in cri_logs}
    for where, text in outputs.items():
        assert secret not in text, where
        # Nor a token: the stand-in issues secrets.token_urlsafe(32), 43 such characters.
        assert not TOKEN_SHAPED.findall(text), where


# -- the stand-in itself ----------------------------------------------------------------------


def _call(
    url: str, headers: dict[str, str] | None = None, form: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_oauth_demo_issues_tokens_and_its_api_wants_them(tmp_path: Path) -> None:
    secret = "s3cr:t+pa ss%"  # characters client_secret_basic must form-encode
    (tmp_path / "client_secret").write_text(secret + "\n")
    port = free_port()
    args = [
        "--listen",
        f"127.0.0.1:{port}",
        "--client-secret-file",
        str(tmp_path / "client_secret"),
    ]
    demo = ImageProcess(
        "podkit.images.oauth_demo", args, image_env(OAUTH_DEMO_TOKEN_LIFETIME="1"), tmp_path
    )
    try:
        demo.wait_for(lambda recs: any(r.get("msg") == "listening" for r in recs), 10)
        base = f"http://127.0.0.1:{port}"
        # No token: 401 with a challenge but no error code (RFC 6750 3.1).
        status, headers, _ = _call(base + "/orders")
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="oauth-demo"')
        # client_secret_basic (id and secret form-encoded first, RFC 6749 2.3.1) and _post.
        basic = base64.b64encode(f"demo-app:{quote(secret, safe='')}".encode()).decode()
        grant = {"grant_type": "client_credentials"}
        status, _, token = _call(base + "/token", {"Authorization": f"Basic {basic}"}, grant)
        assert status == 200 and token["token_type"] == "Bearer" and token["expires_in"] == 1
        post = {**grant, "client_id": "demo-app", "client_secret": secret}
        assert _call(base + "/token", form=post)[0] == 200
        wrong = {**post, "client_secret": "nope"}
        assert _call(base + "/token", form=wrong)[2]["error"] == "invalid_client"

        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        status, _, answer = _call(base + "/v1/orders?id=7", bearer)
        assert status == 200 and answer["client_id"] == "demo-app"
        assert answer["path"] == "/v1/orders?id=7"
        status, headers, _ = _call(base + "/orders", {"Authorization": "Bearer unknown"})
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        # The token lives --token-lifetime seconds, then is invalid_token too.
        wait_for("the token to expire", lambda: _call(base + "/orders", bearer)[0] == 401, 5)

        code, _ = demo.terminate(timeout=5)
        assert code == 0
        output = "\n".join(demo.lines) + demo.stderr()
        assert secret not in output and token["access_token"] not in output
    finally:
        demo.kill()
