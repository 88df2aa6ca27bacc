"""`oauth-demo` / `python -m podkit.images.oauth_demo`: a STAND-IN for "an external API and its
identity provider", so examples/adapter-oauth2.yaml runs on one machine without one.

NOT SOMETHING TO DEPLOY: one client, tokens kept in memory, plain HTTP, no rate limits, no
persistence. It exists so the auth-adapter has a real OAuth2 server to talk to in the examples.

    POST /token     OAuth2 token endpoint (authlib's AuthorizationServer): grant_type
                    client_credentials, client_secret_basic or client_secret_post; opaque
                    bearer tokens that live --token-lifetime seconds
    GET|HEAD|POST /...
                    the protected API (authlib's ResourceProtector + BearerTokenValidator): 200
                    {"client_id", "path", "time"} with a valid token; 401 with
                    `WWW-Authenticate: Bearer ...` (error="invalid_token" for an unknown or
                    expired token, no error code when there is none, as RFC 6750 3.1 says)
    GET /healthz    200, no token needed (for probes)

Settings (an argument wins over its environment variable):
    --listen HOST:PORT       OAUTH_DEMO_LISTEN               127.0.0.1:9400 (loopback: plain HTTP)
    --client-id ID           OAUTH_DEMO_CLIENT_ID            demo-app
    --client-secret-file F   OAUTH_DEMO_CLIENT_SECRET_FILE   (or OAUTH_DEMO_CLIENT_SECRET)
    --token-lifetime S       OAUTH_DEMO_TOKEN_LIFETIME       3600
The secret is never an argument (it would show in `ps`), and neither it nor any token is logged.
"""

from __future__ import annotations

from podkit.common import early_stop

early_stop.install()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import ipaddress  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from podkit.common import logging as podkit_logging  # noqa: E402
from podkit.common import signals  # noqa: E402
from podkit.common.config import EXIT_CONFIG_ERROR, format_hostport, parse_hostport  # noqa: E402
from podkit.common.httpserver import HttpServer  # noqa: E402
from podkit.images.oauth_demo.server import Client, Demo  # noqa: E402

log = logging.getLogger("oauth-demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="oauth-demo",
        description="A stand-in external API and its OAuth2 token endpoint, for the examples. "
        "Not for deployment.",
    )
    parser.add_argument("--listen", default=env("OAUTH_DEMO_LISTEN", "127.0.0.1:9400"))
    parser.add_argument("--client-id", default=env("OAUTH_DEMO_CLIENT_ID", "demo-app"))
    parser.add_argument("--client-secret-file", default=env("OAUTH_DEMO_CLIENT_SECRET_FILE"))
    lifetime = env("OAUTH_DEMO_TOKEN_LIFETIME", "3600")
    parser.add_argument("--token-lifetime", type=float, default=lifetime, help="seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        host, port = parse_hostport(args.listen)
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{args.listen!r}: plain-HTTP OAuth2 only on 127.0.0.1 or [::1]")
        if args.client_secret_file:
            with open(args.client_secret_file) as f:
                secret = f.read().strip()
        else:
            secret = os.environ.get("OAUTH_DEMO_CLIENT_SECRET", "")
        if not secret:
            raise ValueError(
                "no client secret: set --client-secret-file or OAUTH_DEMO_CLIENT_SECRET"
            )
        if args.token_lifetime < 1:
            raise ValueError("--token-lifetime: at least 1 second")
    except (OSError, ValueError) as exc:
        print(f"oauth-demo: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    podkit_logging.setup("oauth-demo")
    token_url = f"http://{format_hostport(host, port)}/token"
    demo = Demo(Client(args.client_id, secret), args.token_lifetime, token_url)

    async def serve(stop: asyncio.Event) -> int:
        server = HttpServer(demo.handle, max_body=64 * 1024)
        try:
            await server.start(host, port)
        except OSError as exc:
            print(f"oauth-demo: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
            return 1
        log.info(
            "listening",
            extra={
                "listen": args.listen,
                "client_id": args.client_id,
                "lifetime_s": args.token_lifetime,
                "stand_in": True,
            },
        )
        await stop.wait()
        await server.close(timeout=1.0)
        log.info("stopped")
        return 0

    return signals.run(serve)


if __name__ == "__main__":
    sys.exit(main())
