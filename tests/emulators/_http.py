"""HTTP server machinery for the local LLM API emulators (stdlib only).

``BaseEmulator``: a ``ThreadingHTTPServer`` on 127.0.0.1 with an ephemeral port, run in a
background thread, recording every request it receives and answering with scripted behaviours
(see ``behaviours.py``). Vendor protocols live in ``openai_api.py`` and ``anthropic_api.py``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .behaviours import (
    LN_09,
    Behaviour,
    RuleFn,
    _coerce,
    answer,
    content_text,
    default_rule,
    extract_lead,
    new_id,
    ntokens,
)
from .ratelimit import ServerLimit

REDACTED = "REDACTED"
_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")


# --------------------------------------------------------------------------- server
@dataclass
class RecordedRequest:
    """A request as received: lowercased headers with auth values replaced by ``REDACTED``."""

    method: str
    path: str
    headers: dict
    body: Any
    auth_ok: bool = False
    at: float = field(default_factory=time.monotonic)  # when it arrived
    status: int | None = None  # what the emulator answered (None: dropped)
    limited: bool = False  # refused by the emulator's own rate limit
    done: float | None = None  # when the answer was sent

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    def __getitem__(self, key: str) -> Any:  # allow req["body"] as well as req.body
        return getattr(self, key)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # listen backlog: the default 5 drops SYNs when 64 clients connect at once (1 s retry)
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    emulator: BaseEmulator  # set by BaseEmulator.start(): the handler threads reach their emulator through it

    def handle_error(self, request, client_address):  # silence broken pipes etc.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llm-emulator"
    sys_version = ""
    server: _Server

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
        emu = self.server.emulator
        try:
            emu._handle(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # an emulator bug: answer 500 and keep it for the test to see
            emu.errors.append(exc)
            try:
                self.send_json(500, {"error": {"message": f"emulator bug: {exc!r}", "type": "emulator_error"}})
            except OSError:
                self.close_connection = True

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
    _rid_prefix = "req_"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        limit_window_s: float = 1.0,
    ):
        self.api_key = api_key or self.default_api_key
        self.known_models: set[str] | None = None  # GET /v1/models/{id}: None = every model exists, else 404 for others
        self.model_lookups: list[RecordedRequest] = []  # those GETs (free: not in ``requests``)
        self.default: RuleFn = default_rule
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []  # exceptions raised inside the emulator (bugs, bad rules)
        self._scripts: dict[str, tuple[list[Behaviour], list[int]]] = {}
        self._lock = threading.Lock()
        self._conns: set = set()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tls = threading.local()
        self.request_limit: ServerLimit | None = None
        self.token_limit: ServerLimit | None = None
        self.limit(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute, window_s=limit_window_s)

    def limit(
        self,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        window_s: float = 1.0,
        tokens_window_s: float = 60.0,
    ) -> BaseEmulator:
        """Enforce rate limits like the real API (see ``ratelimit.py``): over the limit, requests get the
        vendor's 429 with Retry-After; every response carries the vendor's rate-limit headers. ``None`` = no
        limit (static headers, nothing enforced)."""
        self.request_limit = ServerLimit(requests_per_minute, window_s) if requests_per_minute else None
        self.token_limit = ServerLimit(tokens_per_minute, tokens_window_s) if tokens_per_minute else None
        return self

    def rate_limited_count(self) -> int:
        """Requests refused by the emulator's own rate limit (scripted 429s not included)."""
        with self._lock:
            return sum(1 for r in self.requests if r.limited)

    # ---- lifecycle
    def start(self) -> BaseEmulator:
        if self._server is None:
            self._closing.clear()
            self._server = _Server(("127.0.0.1", 0), _Handler)
            self._server.emulator = self
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name=f"{type(self).__name__}-{self.port}", daemon=True
            )
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
            with contextlib.suppress(OSError):  # already closed by the client
                c.shutdown(socket.SHUT_RDWR)
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
    def script(self, model: str, *behaviours: Behaviour | dict) -> BaseEmulator:
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
    def _rid(self) -> str:
        """Request id of the request being handled by this thread (same in header and body)."""
        if getattr(self._tls, "rid", None) is None:
            self._tls.rid = new_id(self._rid_prefix, 24)
        return self._tls.rid

    def _handle(self, h: _Handler) -> None:
        if h.command == "GET" and (h.path.split("?")[0] == "/v1/models" or h.path.startswith("/v1/models/")):
            return self._get_model(h)
        self._tls.rid = None
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        body: Any  # the JSON request, or the raw text when it is not JSON (the precheck refuses that)
        try:
            body = json.loads(raw_body) if raw_body else None
            parse_ok = True
        except ValueError:
            body, parse_ok = raw_body.decode("utf-8", "replace"), False
        auth_ok = self._auth_ok(headers)
        rec = RecordedRequest(
            h.command, h.path.split("?")[0], {k: (REDACTED if k in _AUTH_HEADERS else v) for k, v in headers.items()}, body, auth_ok
        )
        with self._lock:
            self.requests.append(rec)

        def reply(status: int, obj: Any, extra: dict | None = None) -> None:
            rec.status = status
            h.send_json(status, obj, {**self._headers(), **(extra or {})})
            rec.done = time.monotonic()

        failure = self._precheck(h, rec, headers, parse_ok)
        if failure is not None:
            status, err = failure
            return reply(status, err)
        refused = self._rate_check(body)
        if refused is not None:  # refused before any model work: no scripted behaviour is used up
            rec.limited = True
            err, extra = refused
            return reply(429, err, extra)
        b = self._next_behaviour(body["model"])
        if b.kind == "delay":
            if self._closing.wait(b.seconds):
                return h.drop()
            b = b.then or Behaviour("rule", fn=None, logprob=LN_09)
        if b.kind == "drop":
            return h.drop()
        if b.kind == "error":
            assert b.status is not None  # error() always sets it
            err = b.body if b.body is not None else self._error_body(b.status, body)
            return reply(b.status, err, b.headers)
        if b.kind == "rule":
            fn = b.fn or self.default
            lead = extract_lead(self._last_user_text(body))
            b = answer(fn(lead, body), logprob=b.logprob)
        reply(200, self._success(body, b))

    def _rate_check(self, body: dict) -> tuple[dict, dict] | None:
        """Spend this request's requests and tokens, or the vendor's 429 body and headers."""
        if self.request_limit is not None:
            wait = self.request_limit.take(1)
            if wait > 0:
                return self._rate_limit_error("requests", self.request_limit, 1, wait, body)
        if self.token_limit is not None:
            n = request_tokens(body)
            wait = self.token_limit.take(n)
            if wait > 0:
                return self._rate_limit_error("tokens", self.token_limit, n, wait, body)
        return None

    def _get_model(self, h: _Handler) -> None:
        """``GET /v1/models/{id}`` and ``GET /v1/models`` (both vendors have them; crmsync's ``check()`` calls them),
        answered by the vendor's ``_model_info`` (``model`` None: the list). ``known_models`` = None: every model
        exists. Kept in ``model_lookups``, not ``requests``: a lookup costs nothing, and tests count ``requests`` as
        what was paid for."""
        self._tls.rid = None
        headers = {k.lower(): v for k, v in h.headers.items()}
        path = h.path.split("?")[0]
        rec = RecordedRequest(
            h.command, path, {k: (REDACTED if k in _AUTH_HEADERS else v) for k, v in headers.items()}, None, self._auth_ok(headers)
        )
        with self._lock:
            self.model_lookups.append(rec)
        model = urllib.parse.unquote(path[len("/v1/models/") :]) if path.startswith("/v1/models/") else None
        status, obj = self._model_info(rec, headers, model)
        rec.status = status
        h.send_json(status, obj, self._headers())
        rec.done = time.monotonic()

    # ---- vendor hooks
    def _model_info(self, rec: RecordedRequest, headers: dict, model: str | None) -> tuple[int, dict]:
        raise NotImplementedError

    def _auth_ok(self, headers: dict) -> bool:
        raise NotImplementedError

    def _precheck(self, h, rec, headers, parse_ok) -> tuple[int, dict] | None:
        raise NotImplementedError

    def _headers(self) -> dict:
        raise NotImplementedError

    def _error_body(self, status: int, body: dict) -> dict:
        raise NotImplementedError

    def _rate_limit_error(self, kind: str, limit: ServerLimit, requested: float, wait_s: float, body: dict) -> tuple[dict, dict]:
        raise NotImplementedError

    def _success(self, body: dict, b: Behaviour) -> dict:
        raise NotImplementedError

    def _last_user_text(self, body: dict) -> str:
        for m in reversed(body.get("messages") or []):
            if isinstance(m, dict) and m.get("role") == "user":
                return content_text(m.get("content"))
        return ""


def request_tokens(body: dict) -> int:
    """What a request counts against a token limit: its prompt (characters / 4) plus the most it may answer,
    as both vendors count a request's maximum output when it arrives."""
    text = "".join(content_text(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
    if body.get("system") is not None:
        text += content_text(body["system"])
    out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return ntokens(text) + (int(out) if isinstance(out, int) else 0)
