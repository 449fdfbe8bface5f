"""Local emulator of Anthropic's Message Batches API beside Messages (one server, one key).

``POST /v1/messages/batches`` (``requests``: 1 to 100,000 of ``{custom_id, params}``, 256 MB at most; custom_id
``^[a-zA-Z0-9_-]{1,64}$`` and unique), ``GET /v1/messages/batches/{id}``, ``POST …/{id}/cancel``,
``GET …/{id}/results`` (JSON Lines, in no particular order: ``{custom_id, result: {type: succeeded, message} |
{type: errored, error} | {type: canceled} | {type: expired}}``), ``GET /v1/messages/batches`` (newest first,
``after_id`` / ``before_id`` / ``limit``) and ``DELETE``. Shapes as in anthropic 2.14's
``types/messages/message_batch*.py``. Answers come from the Messages emulator's brain with
``usage.service_tier = "batch"``. Test controls: see ``batch_core.py``.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from .anthropic_api import AnthropicEmulator
from .batch_core import BatchControls, EmuBatch, Request, query, send_bytes
from .behaviours import new_id

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
PREFIX = "/v1/messages/batches"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class AnthropicBatchEmulator(BatchControls, AnthropicEmulator):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._init_batches()

    def _handle(self, h: Any) -> None:
        path = h.path.split("?")[0]
        if not path.startswith(PREFIX):
            return super()._handle(h)
        rec, raw, headers = self._receive(h, path)
        if not rec.auth_ok:
            status, obj = 401, self._err("authentication_error", "invalid x-api-key")
        elif not headers.get("anthropic-version"):
            status, obj = self._bad("anthropic-version: header is required")
        else:
            status, obj = self._route(h, rec.method, path, raw)
        rec.status = status
        if isinstance(obj, bytes):
            send_bytes(h, status, obj, "application/binary", self._headers())
        else:
            h.send_json(status, obj, self._headers())
        rec.done = time.monotonic()

    def _route(self, h: Any, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        rest = path[len(PREFIX) :].strip("/")
        parts = rest.split("/") if rest else []
        if not parts and method == "POST":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._bad("There was an error parsing the body of your request")
            return self._create(body, len(raw))
        if not parts and method == "GET":
            return 200, self._list(query(h.path))
        batch = self.batches.get(parts[0])
        if batch is None:
            return 404, self._err("not_found_error", f"No batch found with id '{parts[0]}'")
        if len(parts) == 1 and method == "GET":
            self._pause("retrieve", batch.id)
            return 200, self._render(self._poll(batch))
        if len(parts) == 1 and method == "DELETE":
            if batch.state != "ended":
                return self._bad("Batch must be ended before it can be deleted; cancel it first.")
            del self.batches[batch.id]
            return 200, {"id": batch.id, "type": "message_batch_deleted"}
        if parts[1:] == ["cancel"] and method == "POST":
            return 200, self._render(self._cancel(batch))
        if parts[1:] == ["results"] and method == "GET":
            if batch.state != "ended":
                return self._bad(f"Batch {batch.id} is still processing; results are available once it has ended.")
            self._pause("results", batch.id)
            return 200, self._results(batch)
        return 404, self._err("not_found_error", "Not Found")

    def _create(self, body: dict, size: int) -> tuple[int, Any]:
        reqs = body.get("requests")
        if not isinstance(reqs, list) or not reqs:
            return self._bad("requests: at least one request is required")
        if len(reqs) > MAX_REQUESTS:
            return self._bad(f"requests: a batch holds at most {MAX_REQUESTS:,} requests, got {len(reqs):,}")
        if size > MAX_BYTES:
            return 413, self._err("request_too_large", "Request exceeds the maximum allowed number of bytes.")
        seen: set[str] = set()
        for i, r in enumerate(reqs):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
                return self._bad(f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if cid in seen:
                return self._bad(f"requests.{i}.custom_id: Duplicate custom_id {cid!r}; each must be unique within the batch")
            seen.add(cid)
            params = r.get("params")
            if not isinstance(params, dict) or not all(k in params for k in ("model", "max_tokens", "messages")):
                return self._bad(f"requests.{i}.params: model, max_tokens and messages are required")
        self._pause("create_before")
        batch = EmuBatch(id=new_id("msgbatch_01", 22), requests=[Request(r["custom_id"], r["params"]) for r in reqs])
        self._register(batch)
        self._pause("create_after", batch.id)
        return 200, self._render(batch)

    def answer_body(self, body: dict) -> tuple[int, dict]:
        for name in ("temperature", "top_p", "top_k"):  # API version 2026-10-21 rejects sampling parameters
            if name in body:
                return self._bad(f"{name}: Extra inputs are not permitted")
        status, obj = super().answer_body(body)
        if status == 200:
            obj["usage"]["service_tier"] = "batch"
        return status, obj

    def _list(self, q: dict) -> dict:
        items = sorted(self.batches.values(), key=lambda b: b.created, reverse=True)
        ids = [b.id for b in items]
        if q.get("after_id") in ids:
            items = items[ids.index(q["after_id"]) + 1 :]
        elif q.get("before_id") in ids:
            items = items[: ids.index(q["before_id"])]
        limit = int(q.get("limit", 20))
        page = items[:limit]
        return {
            "data": [self._render(b) for b in page],
            "has_more": len(items) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    def _render(self, b: EmuBatch) -> dict:
        ended = b.state == "ended"
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        for r in b.requests:  # tallies move only once the whole batch has ended, as documented
            counts[r.ended_as if ended else "processing"] += 1
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": b.state,
            "request_counts": counts,
            "ended_at": _iso(b.ended),
            "created_at": _iso(b.created),
            "expires_at": _iso(b.created + 86400),
            "archived_at": None,
            "cancel_initiated_at": _iso(b.cancel_at),
            "results_url": f"{self.url}{PREFIX}/{b.id}/results" if ended else None,
        }

    def _results(self, b: EmuBatch) -> bytes:
        lines = []
        for r in reversed(b.requests):  # not in request order: match by custom_id
            if r.ended_as == "succeeded":
                result: dict = {"type": "succeeded", "message": r.answer}
            elif r.ended_as == "errored":
                result = {"type": "errored", "error": r.answer}
            else:
                result = {"type": r.ended_as}
            lines.append(json.dumps({"custom_id": r.custom_id, "result": result}))
        return ("\n".join(lines) + "\n").encode()
