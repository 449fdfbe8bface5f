"""What both batch emulators share: the batch records, the test controls, and one request answered by the
synchronous emulator's own brain (scripts, the default rule, token counts), so a batch answer equals the
synchronous one.

Controls (on the emulator, for batches created after they are set unless a batch id is given):
- ``finish_after_polls = N``: a batch ends on the (N+1)-th retrieve (0: the first retrieve sees it ended);
  ``hold()`` keeps new batches in progress until ``finish(batch_id)``.
- ``fail_requests({i, ...}, status=500)``: request number i (0-based, in submission order) gets an HTTP error.
- ``expire(batch_id, processed=k)``: the batch expires; its first k requests were answered, the rest expired.
- ``delays[op] = seconds`` for op in upload, create_before, create_after, retrieve, results: the emulator waits
  there (``create_after``: the batch already exists, the answer has not been sent), so a test can kill a client
  at an exact point. ``events`` lists (op, batch or file id) as they happen.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ._http import _AUTH_HEADERS, REDACTED, RecordedRequest
from .behaviours import LN_09, Behaviour, answer, extract_lead


@dataclass
class Request:
    custom_id: str
    body: dict
    status: int | None = None  # the answer's HTTP status once processed; None: not processed (expired/cancelled)
    answer: dict | None = None
    ended_as: str = "processing"  # succeeded | errored | expired | canceled


@dataclass
class EmuBatch:
    id: str
    requests: list[Request]
    created: float = field(default_factory=time.time)
    metadata: dict | None = None
    polls: int = 0
    finish_after: int | None = 0  # None: held until finish()
    state: str = "in_progress"  # in_progress | canceling | ended (vendor-neutral)
    outcome: str = "completed"  # completed | expired | cancelled | failed
    ended: float | None = None
    cancel_at: float | None = None
    fail: set[int] = field(default_factory=set)
    fail_status: int = 500
    extra: dict = field(default_factory=dict)  # vendor specifics (OpenAI: file ids, errors)


class BatchControls:
    """Mixed into a vendor emulator (OpenAIEmulator / AnthropicEmulator) next to its batch protocol."""

    def _init_batches(self) -> None:
        self.batches: dict[str, EmuBatch] = {}
        self.finish_after_polls = 0
        self._hold = False
        self._fail: set[int] = set()
        self._fail_status = 500
        self.delays: dict[str, float] = {}
        self.events: list[tuple[str, str]] = []
        self._block = threading.Lock()

    # ---- controls
    def hold(self, on: bool = True) -> BatchControls:
        self._hold = on
        return self

    def fail_requests(self, indexes: set[int] | list[int], status: int = 500) -> BatchControls:
        self._fail, self._fail_status = set(indexes), status
        return self

    def finish(self, batch_id: str | None = None) -> None:
        """End a batch (every batch still running, when no id is given) now, answering all its requests."""
        for b in self._pick(batch_id):
            self._process(b, len(b.requests))
            self._end(b, "completed")

    def expire(self, batch_id: str | None = None, processed: int = 0) -> None:
        for b in self._pick(batch_id):
            self._process(b, processed)
            for r in b.requests:
                if r.ended_as == "processing":
                    r.ended_as = "expired"
            self._end(b, "expired")

    def batched_requests(self, model: str | None = None) -> list[Request]:
        """Every request ever submitted in a batch (across batches), in submission order."""
        with self._block:
            return [r for b in self.batches.values() for r in b.requests if model is None or r.body.get("model") == model]

    def _pick(self, batch_id: str | None) -> list[EmuBatch]:
        with self._block:
            if batch_id is not None:
                return [self.batches[batch_id]]
            return [b for b in self.batches.values() if b.state != "ended"]

    # ---- engine
    def _pause(self, op: str, ident: str = "") -> None:
        self.events.append((op, ident))
        seconds = self.delays.get(op, 0.0)
        if seconds:
            self._closing.wait(seconds)  # type: ignore[attr-defined]

    def _register(self, batch: EmuBatch) -> EmuBatch:
        batch.finish_after = None if self._hold else self.finish_after_polls
        batch.fail, batch.fail_status = set(self._fail), self._fail_status
        with self._block:
            self.batches[batch.id] = batch
        return batch

    def _poll(self, batch: EmuBatch) -> EmuBatch:
        """One retrieve: count it, and end the batch when its time has come."""
        batch.polls += 1
        if batch.state == "in_progress" and batch.finish_after is not None and batch.polls > batch.finish_after:
            self._process(batch, len(batch.requests))
            self._end(batch, "completed")
        elif batch.state == "canceling":
            for r in batch.requests:
                if r.ended_as == "processing":
                    r.ended_as = "canceled"
            self._end(batch, "cancelled")
        return batch

    def _cancel(self, batch: EmuBatch) -> EmuBatch:
        if batch.state == "in_progress":
            batch.state, batch.cancel_at = "canceling", time.time()
        return batch

    def _end(self, batch: EmuBatch, outcome: str) -> None:
        if batch.state == "ended":
            return
        batch.state, batch.outcome, batch.ended = "ended", outcome, time.time()

    def _process(self, batch: EmuBatch, upto: int) -> None:
        for i, r in enumerate(batch.requests[:upto]):
            if r.ended_as != "processing":
                continue
            if i in batch.fail:
                r.status, r.answer = batch.fail_status, self._error_body(batch.fail_status, r.body)  # type: ignore[attr-defined]
            else:
                r.status, r.answer = self.answer_body(r.body)
            r.ended_as = "succeeded" if r.status == 200 else "errored"

    def _receive(self, h: Any, path: str) -> tuple[RecordedRequest, bytes, dict[str, str]]:
        """Read and record one batch-API request (auth headers redacted), as the synchronous routes do."""
        self._tls.rid = None  # type: ignore[attr-defined]
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        masked = {k: (REDACTED if k in _AUTH_HEADERS else v) for k, v in headers.items()}
        rec = RecordedRequest(h.command, path, masked, None, self._auth_ok(headers))  # type: ignore[attr-defined]
        with self._lock:  # type: ignore[attr-defined]
            self.requests.append(rec)  # type: ignore[attr-defined]
        return rec, raw, headers

    def answer_body(self, body: dict) -> tuple[int, dict]:
        """One request through the synchronous emulator's brain: validation, scripts, the default rule and its
        token counts (prompt caching included), exactly as ``POST`` of the same body would answer."""
        problem = self._validate(body)  # type: ignore[attr-defined]
        if problem is not None:
            return problem
        b: Behaviour = self._next_behaviour(body["model"])  # type: ignore[attr-defined]
        if b.kind == "delay":
            b = b.then or Behaviour("rule", fn=None, logprob=LN_09)
        if b.kind == "drop":
            return 500, self._error_body(500, body)  # type: ignore[attr-defined]
        if b.kind == "error":
            return b.status or 500, b.body if b.body is not None else self._error_body(b.status, body)  # type: ignore[attr-defined]
        if b.kind == "rule":
            fn = b.fn or self.default  # type: ignore[attr-defined]
            b = answer(fn(extract_lead(self._last_user_text(body)), body), logprob=b.logprob)  # type: ignore[attr-defined]
        return 200, self._success(body, b)  # type: ignore[attr-defined]


def send_bytes(h: Any, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)
    h.wfile.flush()


def query(path: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(path).query))
