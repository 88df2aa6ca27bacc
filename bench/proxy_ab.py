"""The ambassador at two revisions, side by side: is a change within N% of what it replaced?

`BASE=<git revision> python bench/proxy_ab.py` checks BASE out into a temporary worktree, starts
its ambassador and this tree's, each in front of the same nginx backend (bench/proxy.py's), and
runs wrk against them in PAIRS pairs (default 12) of DURATION-second runs (default 3), the order
alternating within the pairs, the machine's drift shared by both. It prints each run's
requests/s and CPU per request, then the medians of the pairs' ratios (this tree over BASE); the
last line is one JSON object. Not part of `make bench`: it compares podkit with itself.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("DURATION", "3")
os.environ.setdefault("WARMUP", "1")

import benchlib  # noqa: E402 - reads DURATION and WARMUP when imported
from benchlib import free_ports, get, measure, start, start_nginx, wait_until  # noqa: E402
from proxy import NGINX_BACKEND  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PAIRS = int(os.environ.get("PAIRS", "12"))
CONFIG = """
admin: {{listen: "127.0.0.1:{admin}"}}
access_log: {{enabled: false}}
listeners:
- name: http
  listen: "127.0.0.1:{port}"
  routes: [{{match: {{prefix: /}}, cluster: backend}}]
clusters:
- name: backend
  endpoints: [{{address: "127.0.0.1:{backend}"}}]
"""


def run(tmp: Path) -> dict[str, object]:
    base = os.environ.get("BASE")
    if not base:
        raise SystemExit("BASE=<git revision> names the revision to compare with")
    worktree = tmp / "base"
    git = ["git", "-C", str(REPO), "worktree"]
    subprocess.run([*git, "add", "-f", str(worktree), base], check=True)
    try:
        return compare(tmp, {"base": worktree / "src", "this": REPO / "src"})
    finally:
        subprocess.run([*git, "remove", "--force", str(worktree)], check=False)


def compare(tmp: Path, sources: dict[str, Path]) -> dict[str, object]:
    backend_port, *ports = free_ports(1 + 2 * len(sources))
    backend = start_nginx("backend", tmp, NGINX_BACKEND, port=backend_port)
    wait_until(backend, "the backend", lambda: get(backend_port, "/", None)[0] == 200)
    servers = {}
    for (name, src), port, admin in zip(sources.items(), ports[::2], ports[1::2], strict=True):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
        config = tmp / f"{name}.yaml"
        config.write_text(CONFIG.format(admin=admin, port=port, backend=backend_port))
        os.environ["PYTHONPATH"] = str(src)  # the started ambassador's code
        argv = [sys.executable, "-m", "podkit.images.ambassador", "--config", str(config)]
        server = start(f"ambassador-{name}", argv, tmp / f"{name}.log")
        wait_until(server, name, lambda port=port: get(port, "/", None)[0] == 200)
        servers[name] = (server, port)
    rps: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    for i in range(PAIRS):
        for name in ("base", "this") if i % 2 == 0 else ("this", "base"):
            server, port = servers[name]
            result = measure(name, f"http://127.0.0.1:{port}/", server)
            rps[name].append(result.rps)
            cpu[name].append(result.cpu_us)

    def ratio(figures: dict[str, list[float]]) -> float:
        pairs = zip(figures["this"], figures["base"], strict=True)
        return round(statistics.median(t / b for t, b in pairs), 3)

    figures: dict[str, object] = {
        "rps_ratio": ratio(rps),
        "cpu_ratio": ratio(cpu),
        "rps_base": round(statistics.median(rps["base"])),
        "rps_this": round(statistics.median(rps["this"])),
        "pairs": PAIRS,
    }
    print(
        f"this tree over BASE: requests/s x{figures['rps_ratio']}, CPU per request "
        f"x{figures['cpu_ratio']} (medians of {PAIRS} pairs)",
        file=sys.stderr,
    )
    return figures


if __name__ == "__main__":
    benchlib.main("proxy_ab", ["wrk", "nginx", "git"], run)
