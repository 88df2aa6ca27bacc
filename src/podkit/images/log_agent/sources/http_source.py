"""HTTP source: POST a JSON object, a JSON array, or JSON/text lines (Fluent Bit `http`).

Any path is accepted (`/` is the usual one). The answer is `201 Created` with an empty body as
soon as the events are safely buffered (on disk); `400` when the body claims to be JSON and is
not; `413` when it is larger than `max_body_bytes`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from podkit.common.clock import rfc3339
from podkit.common.httpserver import HttpServer, Request, Response
from podkit.images.log_agent.event import Batch
from podkit.images.log_agent.pipeline import Ingest


def decode_body(body: bytes, content_type: str) -> list[str] | None:
    """One text per record (a JSON object re-encoded as one line, for the parser to decode),
    or None if a JSON body does not decode."""
    text = body.strip()
    if not text:
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
        is_json = False
    else:
        is_json = True
    if is_json:
        items = value if isinstance(value, list) else [value]
        return [_record(item) for item in items]
    # Not one JSON document: newline-delimited lines, each JSON or plain text.
    lines = [ln.strip() for ln in text.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if "json" in content_type.lower():
        for line in lines:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                return None
    return lines


def _record(item: Any) -> str:
    return item if isinstance(item, str) else orjson.dumps(item).decode()


class HttpSource:
    def __init__(
        self, id: str, host: str, port: int, ingest: Ingest, *, max_body_bytes: int
    ) -> None:
        self.id = id
        self._host = host
        self._port = port
        self._ingest = ingest
        self._server = HttpServer(self._handle, max_body=max_body_bytes)

    def describe(self) -> str:
        return f"{self._host}:{self._server.port}"

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self) -> None:
        await self._server.start(self._host, self._port)

    async def stop(self) -> None:
        await self._server.close(timeout=0.5)

    async def _handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405, b"use POST\n", headers={"Allow": "POST"})
        decoded = decode_body(request.body, request.headers.get("content-type", ""))
        if decoded is None:
            return Response.text(400, "body is not valid JSON or JSON lines\n")
        now = rfc3339(time.time())
        events = [{"time": now, "message": text} for text in decoded]
        # Not replayable: the buffers keep it on disk before the 201 says it is safe.
        batch = Batch(self.id, events, {"source": "http"}, len(request.body), replayable=False)
        await self._ingest(batch)
        return Response(201)
