"""The Elasticsearch sink (Vector `elasticsearch`, Fluent Bit `es`): the `_bulk` API, NDJSON.

    POST {endpoint}/_bulk
    {"create":{"_index":"log-agent-2026.11.25","_id":"<the event's _id>"}}
    {"@timestamp":"2026-11-25T22:15:08.123456Z","message":"…","kubernetes":{…},…}

Index: `index` is a name with strftime codes filled in from the event's time in UTC (default
`log-agent-%Y.%m.%d`, one index a day, like Vector's `vector-%Y.%m.%d`), or a fixed name: an
index, an alias, or a data stream (`create` is the operation data streams take). Daily indices are
the default because they keep replays idempotent: the event's time picks the index, so a replayed
event lands in the same index under the same `_id` and is refused as a duplicate; a data stream
only catches duplicates within its current backing index (not across a rollover).

Document: the full event, "time" as `@timestamp` (the text as sent; an event whose time does not
parse gets the time of encoding, and keeps its "time" field), without "_id" (Elasticsearch refuses
it in a document). `_id`: the event's "_id" (file identity + offset, the same on every delivery),
else the SHA-1 of the document (plus, for a repeat of an identical document in the same batch, its
ordinal, so two identical lines stay two documents).

Payload: one item a line, `<action>\x1f<document>` (JSON text holds no raw control character, so
\x1f cannot occur inside either); the `_bulk` body puts each on two lines.

Results of one send, item by item (the buffer needs both "drop these" and "retry those"):
- 200/201: delivered; 409 (version_conflict_engine_exception): already there from an earlier
  send, a duplicate and not an error;
- 429 and 5xx: retried: `send` raises RetryableError with `remaining` = the payload of only
  those items;
- other 4xx (mapping errors: the document itself is refused, whatever `on_client_error` says of
  whole requests): dropped, counted under "es_<status>_<error type>", for example
  "es_400_mapper_parsing_exception"; `send` returns them by reason (or gives them as the
  RetryableError's `rejected`).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from podkit.images.log_agent.event import ID_KEY, Batch
from podkit.images.log_agent.sinks.base import Rejected, RetryableError
from podkit.images.log_agent.sinks.http import unix_nanos
from podkit.images.log_agent.sinks.http_client import HttpClient, HttpClientConfig, base_url

DEFAULT_INDEX = "log-agent-%Y.%m.%d"
# Elasticsearch index names: lowercase, none of these characters, not starting with -, _ or +.
_BAD_INDEX_CHARS = re.compile(r'[\\/*?"<>| ,#:A-Z]')
# Only what the item loop reads: a bulk answer otherwise repeats _index, _id, _shards... per item.
_FILTER = "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason"


class ElasticsearchConfig(HttpClientConfig):
    type: Literal["elasticsearch"]
    name: str | None = None
    endpoint: str = Field(
        default="http://localhost:9200", description="base URL; /_bulk is appended"
    )
    index: str = Field(
        default=DEFAULT_INDEX, description="strftime codes are filled in from the event's time"
    )

    @field_validator("index")
    @classmethod
    def _check_index(cls, value: str) -> str:
        literal = re.sub(r"%.", "", value)
        if not value or value in (".", "..") or value[0] in "-_+":
            raise ValueError(f"invalid index name {value!r}")
        if _BAD_INDEX_CHARS.search(literal):
            raise ValueError(
                f"index {value!r}: use lowercase letters, digits, -, _, + and . "
                '(no spaces, \\ / * ? " < > | , # :)'
            )
        return value


@dataclass(slots=True)
class BulkResult:
    created: int = 0
    duplicates: int = 0  # already indexed by an earlier send (409): not delivered twice
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> items dropped for good
    retrying: int = 0  # items in the RetryableError's `remaining`
    first_error: str = ""  # "<reason>: <Elasticsearch's words>" of the first failed item


class BulkEncoder:
    def __init__(self, index: str) -> None:
        self.index = index

    def index_for(self, nanos: int) -> str:
        if "%" not in self.index:
            return self.index
        return _strftime(self.index, nanos // 1_000_000_000)

    def encode(self, batch: Batch) -> bytes:
        dumps = orjson.dumps
        out: list[bytes] = []
        seen: dict[str, int] = {}
        now_ns: int | None = None
        for event in batch.events:
            doc = {**event, **batch.common}  # a copy: the batch goes to other sinks too
            event_id = doc.pop(ID_KEY, None)
            when = doc.pop("time", None)
            nanos = unix_nanos(when)
            if nanos is None:
                now_ns = now_ns or time.time_ns()
                nanos, stamp = now_ns, _rfc3339(now_ns)
                if when is not None:
                    doc["time"] = when  # what the sender wrote is kept
            else:
                stamp = when
            source = dumps({"@timestamp": stamp, **doc}, default=str)
            if event_id is not None:
                doc_id = str(event_id)
            else:
                doc_id = hashlib.sha1(source).hexdigest()
                repeat = seen.get(doc_id, 0)
                seen[doc_id] = repeat + 1
                if repeat:
                    doc_id = hashlib.sha1(source + b"\n%d" % repeat).hexdigest()
            action = {"create": {"_index": self.index_for(nanos), "_id": doc_id}}
            out += (dumps(action), b"\x1f", source, b"\n")
        return b"".join(out)


def bulk_body(payload: bytes) -> bytes:
    """The `_bulk` body of a payload of items: action and document on lines of their own."""
    return payload.replace(b"\x1f", b"\n")


def read_bulk_answer(payload: bytes, answer: bytes) -> tuple[BulkResult, bytes | None]:
    """What the `_bulk` answer says of each item, and the payload to retry (None: nothing).
    ValueError when the answer cannot be matched to the payload's items."""
    data: Any = orjson.loads(answer)
    lines = payload.splitlines()  # JSON text holds no raw newline: a line is one item
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("errors") is False:
        return BulkResult(created=len(lines)), None
    items = data.get("items")
    if not isinstance(items, list) or len(items) != len(lines):
        raise ValueError(f"{len(lines)} items sent, answer lists {len(items or [])}")
    result = BulkResult()
    retry: list[bytes] = []
    for n, item in enumerate(items):
        outcome = next(iter(item.values()), None) if isinstance(item, dict) else None
        if not isinstance(outcome, dict):
            outcome = {}
        status = int(outcome.get("status", 0))
        if 200 <= status < 300:
            result.created += 1
            continue
        if status == 409:
            result.duplicates += 1
            continue
        error = outcome.get("error") or {}
        kind = error.get("type", "unknown") if isinstance(error, dict) else "unknown"
        reason = f"es_{status}_{kind}"
        if not result.first_error:
            words = error.get("reason", "") if isinstance(error, dict) else str(error)
            result.first_error = f"{reason}: {str(words)[:200]}"
        if status == 429 or status >= 500:
            result.retrying += 1
            retry += (lines[n], b"\n")
        else:
            result.rejected[reason] = result.rejected.get(reason, 0) + 1
    return result, (b"".join(retry) if retry else None)


class ElasticsearchSink:
    def __init__(self, id: str, cfg: ElasticsearchConfig) -> None:
        self.id = id
        self.cfg = cfg
        self._encoder = BulkEncoder(cfg.index)
        self._client = HttpClient(id, cfg)
        self._url = f"{base_url(cfg.endpoint)}/_bulk?{_FILTER}"
        self.batching = cfg.batching()

    def encode(self, batch: Batch) -> bytes:
        return self._encoder.encode(batch)

    async def start(self) -> None:
        await self._client.start()

    async def send(self, payload: bytes) -> Rejected | None:
        answer = await self._client.post(self._url, bulk_body(payload), "application/x-ndjson")
        try:
            result, remaining = read_bulk_answer(payload, answer)
        except ValueError as exc:  # orjson.JSONDecodeError is one too
            # Resending everything is safe: what was indexed comes back as 409.
            raise RetryableError(f"{self.id}: unreadable _bulk answer: {exc}") from None
        dropped = sum(result.rejected.values())
        if remaining is not None:
            raise RetryableError(
                f"{self.id}: _bulk: {result.retrying} items to retry, {dropped} rejected; "
                f"{result.first_error}",
                remaining=remaining,
                rejected=result.rejected,
            )
        return result.rejected

    async def close(self) -> None:
        await self._client.close()


@lru_cache(maxsize=4096)
def _strftime(fmt: str, seconds: int) -> str:
    # lower(): index names must be lowercase, and %b or %a give "Nov", "Wed".
    return datetime.fromtimestamp(seconds, UTC).strftime(fmt).lower()


def _rfc3339(nanos: int) -> str:
    seconds, rest = divmod(nanos, 1_000_000_000)
    clock = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{clock}.{rest // 1000:06d}Z"
