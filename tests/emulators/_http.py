"""Shared machinery for the local LLM API emulators (stdlib only).

Contents: scripted behaviours (``answer``, ``raw``, ``error``, ``delay``, ``drop``, ``refusal``,
``truncated``, ``rule``), the deterministic ``default_rule`` lead scorer, token counting, and
``BaseEmulator``: a ``ThreadingHTTPServer`` on 127.0.0.1 with an ephemeral port, run in a
background thread, recording every request it receives.
"""
from __future__ import annotations

import json
import math
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

LN_09 = math.log(0.9)
LN_099 = math.log(0.99)
REDACTED = "REDACTED"
_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")

RuleFn = Callable[[dict, dict], dict]


# --------------------------------------------------------------------------- behaviours
@dataclass(frozen=True)
class Behaviour:
    """One scripted reaction of an emulator. Build with the module-level constructors."""

    kind: str  # answer | raw | error | delay | drop | refusal | truncated | rule
    obj: dict | None = None
    text: str | None = None
    logprob: float | None = None
    status: int | None = None
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0
    then: "Behaviour | None" = None
    fn: RuleFn | None = None
    category: str | None = None


def answer(obj: dict, *, logprob: float | None = None) -> Behaviour:
    """Successful completion whose JSON content (or forced tool input) is ``obj``.

    ``logprob`` is the log-probability reported (OpenAI, ``logprobs: true``) for the tokens of the
    value of the first key of ``obj``; default ln(0.9). All other tokens get ln(0.99)."""
    return Behaviour("answer", obj=dict(obj), logprob=LN_09 if logprob is None else float(logprob))


def raw(text: str) -> Behaviour:
    """Successful completion whose content is exactly ``text`` (e.g. malformed JSON)."""
    return Behaviour("raw", text=text)


def error(status: int, *, retry_after: float | None = None, retry_after_ms: int | None = None,
          body: dict | None = None, should_retry: bool | None = None) -> Behaviour:
    """HTTP error with a vendor-shaped body (or ``body`` verbatim) and optional retry headers."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = str(int(retry_after)) if float(retry_after).is_integer() else repr(float(retry_after))
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(int(retry_after_ms))
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return Behaviour("error", status=int(status), body=body, headers=headers)


def delay(seconds: float, then: Behaviour | dict | None = None) -> Behaviour:
    """Sleep ``seconds`` before answering with ``then`` (default: the emulator's default rule)."""
    return Behaviour("delay", seconds=float(seconds), then=_coerce(then) if then is not None else None)


def drop() -> Behaviour:
    """Close the connection without sending any response (client sees a connection error)."""
    return Behaviour("drop")


def refusal(text: str = "I can't help with that.", *, category: str | None = None) -> Behaviour:
    """Model refusal. OpenAI: ``message.refusal``; Anthropic: ``stop_reason: "refusal"``."""
    return Behaviour("refusal", text=text, category=category)


def truncated(partial_text: str) -> Behaviour:
    """Output cut by the token limit: OpenAI ``finish_reason: "length"``, Anthropic ``"max_tokens"``."""
    return Behaviour("truncated", text=partial_text)


def rule(fn: RuleFn, *, logprob: float | None = None) -> Behaviour:
    """Answer computed from the request: ``fn(lead: dict, request_body: dict) -> dict``."""
    return Behaviour("rule", fn=fn, logprob=LN_09 if logprob is None else float(logprob))


def _coerce(b: Behaviour | dict) -> Behaviour:
    if isinstance(b, Behaviour):
        return b
    if isinstance(b, dict):
        return answer(b)
    raise TypeError(f"not a behaviour: {b!r}")


# --------------------------------------------------------------------------- default rule
_LEAD_BLOCK = re.compile(r"```json\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_TITLE = re.compile(r"\b(VP|Director|Head|Chief|COO|CEO|Founder|Owner)\b", re.IGNORECASE)
_SOURCE = re.compile(r"referral|demo|partner|webinar", re.IGNORECASE)
_JUNK = re.compile(r"\b(student|test|homework|job|career)", re.IGNORECASE)
_INJECTION = re.compile(
    r"ignore\s+(?:(?:all|the|previous|prior|your|any)\s+)*(?:rules|instructions)"
    r"|score\s+(?:this|me|it)(?:\s+lead)?\s+(?:as\s+|a\s+)?100", re.IGNORECASE)
CHECKED_FIELDS = ("monthly_orders", "employees", "industry")


def extract_lead(text: str) -> dict:
    """The JSON object in the first ```json fenced block of ``text``; ``{}`` if none or invalid."""
    m = _LEAD_BLOCK.search(text or "")
    if not m:
        return {}
    try:
        lead = json.loads(m.group(1))
    except ValueError:
        return {}
    return lead if isinstance(lead, dict) else {}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.replace(",", "").replace("_", "").strip())
        except ValueError:
            return None
    return None


def _present(lead: dict, key: str) -> bool:
    return lead.get(key) not in (None, "")


def default_rule(lead: dict, body: dict | None = None) -> dict:
    """Deterministic lead score used when a model is not scripted.

    score starts at 20; numeric ``monthly_orders`` >= 5000: +35, >= 1000: +20, >= 200: +5;
    numeric ``employees`` >= 50: +15; ``title`` matches VP|Director|Head|Chief|COO|CEO|Founder|Owner
    (word, case-insensitive): +10; ``source`` contains referral|demo|partner|webinar: +10;
    ``description`` has a word starting with student|test|homework|job|career: -25; clamped to 0..100.
    confidence = 0.9 if monthly_orders and employees are both present (not null/""), else 0.55.
    missing_or_contradictory = absent keys among monthly_orders, employees, industry.
    lead_text_contains_instructions = any string field matches "ignore (all|the|previous...) rules/
    instructions" or "score (this|me|it) [lead] 100". ``body`` (the request) is unused here.
    """
    lead = lead or {}
    score, reasons = 20, []
    orders = _number(lead.get("monthly_orders"))
    if orders is not None:
        bonus = 35 if orders >= 5000 else 20 if orders >= 1000 else 5 if orders >= 200 else 0
        if bonus:
            score += bonus
            reasons.append(f"{int(orders)} orders/month")
    employees = _number(lead.get("employees"))
    if employees is not None and employees >= 50:
        score += 15
        reasons.append(f"{int(employees)} employees")
    if isinstance(lead.get("title"), str) and _TITLE.search(lead["title"]):
        score += 10
        reasons.append("senior decision maker")
    if isinstance(lead.get("source"), str) and _SOURCE.search(lead["source"]):
        score += 10
        reasons.append(f"strong source: {lead['source']}")
    if isinstance(lead.get("description"), str) and _JUNK.search(lead["description"]):
        score -= 25
        reasons.insert(0, "description suggests a non-buyer")
    if not reasons:
        reasons.append("no strong buying signals" if lead else "no lead data found")
    texts = [v for v in lead.values() if isinstance(v, str)]
    return {
        "score": max(0, min(100, score)),
        "confidence": 0.9 if _present(lead, "monthly_orders") and _present(lead, "employees") else 0.55,
        "reasons": reasons[:3],
        "missing_or_contradictory": [k for k in CHECKED_FIELDS if not _present(lead, k)],
        "lead_text_contains_instructions": any(_INJECTION.search(t) for t in texts),
    }


# --------------------------------------------------------------------------- tokens
def ntokens(text: str) -> int:
    """Deterministic token estimate: ceil(len(text) / 4)."""
    return math.ceil(len(text) / 4) if text else 0


_TOKEN_RE = re.compile(r"\s*\w{1,4}|\s*[^\w\s]|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into pseudo tokens whose concatenation is exactly ``text``."""
    return _TOKEN_RE.findall(text)


def logprob_entries(text: str, hot_span: tuple[int, int] | None, hot_logprob: float,
                    top: int = 0) -> list[dict]:
    """OpenAI ``logprobs.content`` entries covering ``text``; tokens inside ``hot_span`` get
    ``hot_logprob``, the rest ln(0.99)."""
    pieces = [(text, False)]
    if hot_span:
        a, b = hot_span
        pieces = [(text[:a], False), (text[a:b], True), (text[b:], False)]
    out = []
    for piece, hot in pieces:
        for tok in split_tokens(piece):
            lp = hot_logprob if hot else LN_099
            entry = {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8")), "top_logprobs": []}
            if top:
                entry["top_logprobs"] = [{"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}]
            out.append(entry)
    return out


def answer_text(obj: dict) -> tuple[str, tuple[int, int] | None]:
    """Compact JSON text for ``obj`` and the character span of the first key's value."""
    text = json.dumps(obj, ensure_ascii=False)
    if not obj:
        return text, None
    k, v = next(iter(obj.items()))
    start = len("{" + json.dumps(k, ensure_ascii=False) + ": ")
    return text, (start, start + len(json.dumps(v, ensure_ascii=False)))


def new_id(prefix: str, n: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:n]


# --------------------------------------------------------------------------- server
@dataclass
class RecordedRequest:
    """A request as received: lowercased headers with auth values replaced by ``REDACTED``."""

    method: str
    path: str
    headers: dict
    body: Any
    auth_ok: bool = False

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    def __getitem__(self, key: str) -> Any:  # allow req["body"] as well as req.body
        return getattr(self, key)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # silence broken pipes etc.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llm-emulator"
    sys_version = ""

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.server.emulator._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, add=False)

    def do_POST(self):
        self.server.emulator._handle(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    # helpers used by emulators
    def send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        try:  # RST instead of FIN so the client fails immediately
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class BaseEmulator:
    """Common server/scripting logic. Subclasses implement the vendor protocol."""

    default_api_key = "sk-test-emulator"

    def __init__(self, api_key: str | None = None):
        self.api_key = api_key or self.default_api_key
        self.default: RuleFn = default_rule
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[str, tuple[list[Behaviour], list[int]]] = {}
        self._lock = threading.Lock()
        self._conns: set = set()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> "BaseEmulator":
        if self._server is None:
            self._closing.clear()
            self._server = _Server(("127.0.0.1", 0), _Handler)
            self._server.emulator = self
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                            name=f"{type(self).__name__}-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join(timeout=2)
        self._server = self._thread = None

    close = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- scripting
    def script(self, model: str, *behaviours: Behaviour | dict) -> "BaseEmulator":
        """Requests for ``model`` consume ``behaviours`` in order; the last one repeats forever.
        ``model="*"`` scripts every model that has no script of its own."""
        if not behaviours:
            raise ValueError("script() needs at least one behaviour")
        with self._lock:
            self._scripts[model] = ([_coerce(b) for b in behaviours], [0])
        return self

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()

    def request_count(self, model: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if model is None or r.model == model)

    def _next_behaviour(self, model: str) -> Behaviour:
        with self._lock:
            entry = self._scripts.get(model) or self._scripts.get("*")
            if entry is None:
                return Behaviour("rule", fn=None, logprob=LN_09)
            items, pos = entry
            b = items[min(pos[0], len(items) - 1)]
            pos[0] += 1
            return b

    def _track(self, conn, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    # ---- request handling
    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            body = json.loads(raw_body) if raw_body else None
            parse_ok = True
        except ValueError:
            body, parse_ok = raw_body.decode("utf-8", "replace"), False
        auth_ok = self._auth_ok(headers)
        rec = RecordedRequest(h.command, h.path.split("?")[0],
                              {k: (REDACTED if k in _AUTH_HEADERS else v) for k, v in headers.items()},
                              body, auth_ok)
        with self._lock:
            self.requests.append(rec)
        failure = self._precheck(h, rec, headers, parse_ok)
        if failure is not None:
            status, err = failure
            return h.send_json(status, err, self._headers())
        b = self._next_behaviour(body["model"])
        if b.kind == "delay":
            if self._closing.wait(b.seconds):
                return h.drop()
            b = b.then or Behaviour("rule", fn=None, logprob=LN_09)
        if b.kind == "drop":
            return h.drop()
        if b.kind == "error":
            err = b.body if b.body is not None else self._error_body(b.status, body)
            return h.send_json(b.status, err, {**self._headers(), **b.headers})
        if b.kind == "rule":
            fn = b.fn or self.default
            lead = extract_lead(self._last_user_text(body))
            b = answer(fn(lead, body), logprob=b.logprob)
        h.send_json(200, self._success(body, b), self._headers())

    # ---- vendor hooks
    def _auth_ok(self, headers: dict) -> bool:
        raise NotImplementedError

    def _precheck(self, h, rec, headers, parse_ok) -> tuple[int, dict] | None:
        raise NotImplementedError

    def _headers(self) -> dict:
        raise NotImplementedError

    def _error_body(self, status: int, body: dict) -> dict:
        raise NotImplementedError

    def _success(self, body: dict, b: Behaviour) -> dict:
        raise NotImplementedError

    def _last_user_text(self, body: dict) -> str:
        for m in reversed(body.get("messages") or []):
            if isinstance(m, dict) and m.get("role") == "user":
                return content_text(m.get("content"))
        return ""


def content_text(content: Any) -> str:
    """Text of a message ``content`` (a string or a list of text parts/blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") not in ("text", None):
                    out.append(json.dumps({k: v for k, v in part.items() if k != "cache_control"}))
        return "\n".join(out)
    return "" if content is None else json.dumps(content)
