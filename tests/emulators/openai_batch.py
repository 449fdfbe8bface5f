"""Local emulator of OpenAI's Files + Batch APIs beside Chat Completions (one server, one key).

``POST /v1/files`` (multipart, purpose ``batch``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``DELETE /v1/files/{id}``; ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``,
``GET /v1/batches`` (newest first, ``after`` / ``limit``). Shapes as in openai 3.57's ``types/batch.py`` and
``types/file_object.py``. A batch is ``validating`` until its first retrieve, which checks every line (custom_id
unique, ``method`` POST, ``url`` = the batch's endpoint, at most 50,000 lines and 200 MB) and fails the batch
(``errors.data``) or starts it. Output file lines: ``{id, custom_id, response: {status_code, request_id, body},
error: null}``; the error file holds non-200 answers and ``batch_expired`` / ``batch_cancelled`` lines.
Test controls: see ``batch_core.py``.
"""

from __future__ import annotations

import json
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .batch_core import BatchControls, EmuBatch, Request, query, send_bytes
from .behaviours import new_id
from .openai_api import OpenAIEmulator, _err

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations")
_POLICY = HTTP


class OpenAIBatchEmulator(BatchControls, OpenAIEmulator):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._init_batches()
        self.files: dict[str, dict] = {}  # id → {"meta": FileObject, "data": bytes}

    def _handle(self, h: Any) -> None:
        path = h.path.split("?")[0]
        if not path.startswith(("/v1/files", "/v1/batches")):
            return super()._handle(h)
        rec, raw, headers = self._receive(h, path)
        if not rec.auth_ok:
            status, obj = 401, _err("Incorrect API key provided.", code="invalid_api_key")
        else:
            status, obj = self._route(h, rec.method, path, raw, headers)
        rec.status = status
        if isinstance(obj, bytes):
            send_bytes(h, status, obj, "application/octet-stream", self._headers())
        else:
            h.send_json(status, obj, self._headers())
        rec.done = time.monotonic()

    def _route(self, h: Any, method: str, path: str, raw: bytes, headers: dict) -> tuple[int, Any]:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        if parts == ["files"] and method == "POST":
            return self._upload(raw, headers.get("content-type", ""))
        if parts[0] == "files" and len(parts) >= 2 and parts[1] in self.files:
            f = self.files[parts[1]]
            if len(parts) == 3 and parts[2] == "content" and method == "GET":
                self._pause("content", parts[1])
                return 200, f["data"]
            if len(parts) == 2 and method == "GET":
                return 200, f["meta"]
            if len(parts) == 2 and method == "DELETE":
                del self.files[parts[1]]
                return 200, {"id": parts[1], "object": "file", "deleted": True}
        if parts[0] == "files":
            return 404, _err(f"No such File object: {parts[1] if len(parts) > 1 else ''}", param="id")
        if parts == ["batches"] and method == "POST":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return 400, _err("We could not parse the JSON body of your request.")
            return self._create(body)
        if parts == ["batches"] and method == "GET":
            return 200, self._list(query(h.path))
        batch = self.batches.get(parts[1]) if len(parts) >= 2 else None
        if batch is None:
            return 404, _err(f"No batch found with id '{parts[1] if len(parts) > 1 else ''}'.", code="not_found")
        if len(parts) == 2 and method == "GET":
            self._pause("retrieve", batch.id)
            batch.extra["retrieved"] = True
            if batch.outcome != "failed":
                self._poll(batch)
            return 200, self._render(batch)
        if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
            if batch.state == "ended":
                return 409, _err(f"Cannot cancel a batch with status '{self._status(batch)}'.", code="batch_not_cancellable")
            return 200, self._render(self._cancel(batch))
        return 404, _err(f"Invalid URL ({method} {path})")

    # ---- files
    def _upload(self, raw: bytes, content_type: str) -> tuple[int, Any]:
        msg = BytesParser(policy=_POLICY).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in msg.iter_parts() if msg.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)  # bytes for a leaf part
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if "file" not in fields or "purpose" not in fields:
            return 400, _err("Missing required parameter: 'file' and 'purpose' are required.", code="missing_required_parameter")
        purpose = fields["purpose"][1].decode()
        fid = new_id("file-", 24)
        self._pause("upload", fid)
        data = fields["file"][1]
        meta = {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": fields["file"][0] or "upload",
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        self.files[fid] = {"meta": meta, "data": data}
        return 200, meta

    # ---- batches
    def _create(self, body: dict) -> tuple[int, Any]:
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in body:
                return 400, _err(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        if body["completion_window"] != "24h":
            return 400, _err(f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.", param="completion_window")
        if body["endpoint"] not in ENDPOINTS:
            return 400, _err(f"Invalid value: '{body['endpoint']}'.", param="endpoint", code="invalid_value")
        f = self.files.get(body["input_file_id"])
        if f is None or f["meta"]["purpose"] != "batch":
            return 400, _err(
                f"Invalid 'input_file_id': '{body['input_file_id']}'. File must be uploaded with purpose 'batch'.", param="input_file_id"
            )
        meta = body.get("metadata")
        too_big = isinstance(meta, dict) and (len(meta) > 16 or any(len(str(k)) > 64 or len(str(v)) > 512 for k, v in meta.items()))
        if meta is not None and (not isinstance(meta, dict) or too_big):
            return 400, _err("Invalid 'metadata': at most 16 pairs, keys up to 64 and values up to 512 characters.", param="metadata")
        self._pause("create_before")
        batch = EmuBatch(id=new_id("batch_", 32), requests=[], metadata=meta)
        batch.extra.update(endpoint=body["endpoint"], input_file_id=body["input_file_id"])
        self._register(batch)
        self._validate_batch(batch)  # shown as "validating" until the first retrieve
        self._pause("create_after", batch.id)
        return 200, self._render(batch)

    def _validate_batch(self, batch: EmuBatch) -> None:
        data: bytes = self.files[batch.extra["input_file_id"]]["data"]
        errors: list[dict] = []
        lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
        if len(lines) > MAX_LINES or len(data) > MAX_BYTES:
            errors.append(
                {
                    "code": "exceeded_limit",
                    "message": f"The batch input file is larger than the {MAX_LINES:,} requests / 200 MB limit.",
                    "line": None,
                    "param": None,
                }
            )
        seen: set[str] = set()
        for n, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
            except ValueError:
                errors.append(
                    {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "line": n, "param": None}
                )
                continue
            cid = item.get("custom_id")
            if not isinstance(cid, str) or not cid or cid in seen:
                errors.append(
                    {
                        "code": "duplicate_custom_id" if cid in seen else "missing_required_parameter",
                        "message": "The custom_id for this request is a duplicate of another request."
                        if cid in seen
                        else "custom_id is required.",
                        "line": n,
                        "param": "custom_id",
                    }
                )
            elif item.get("method") != "POST" or item.get("url") != batch.extra["endpoint"] or not isinstance(item.get("body"), dict):
                errors.append(
                    {
                        "code": "invalid_request",
                        "message": "method must be POST and url must match the batch's endpoint; body must be an object.",
                        "line": n,
                        "param": "url",
                    }
                )
            else:
                seen.add(cid)
                batch.requests.append(Request(cid, item["body"]))
        batch.extra["validated"] = True
        if errors:
            batch.extra["errors"] = errors[:1000]
            self._end(batch, "failed")

    def _list(self, q: dict) -> dict:
        items = sorted(self.batches.values(), key=lambda b: b.created, reverse=True)
        if q.get("after"):
            ids = [b.id for b in items]
            items = items[ids.index(q["after"]) + 1 :] if q["after"] in ids else []
        limit = int(q.get("limit", 20))
        page = items[:limit]
        return {
            "object": "list",
            "data": [self._render(b) for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(items) > limit,
        }

    def _status(self, b: EmuBatch) -> str:
        if b.state == "canceling":
            return "cancelling"
        if not b.extra.get("retrieved") and (b.state != "ended" or b.outcome == "failed"):
            return "validating"
        if b.state == "in_progress":
            return "in_progress"
        return b.outcome

    def _render(self, b: EmuBatch) -> dict:
        status = self._status(b)
        ended = b.state == "ended"
        if ended and "output_file_id" not in b.extra and b.outcome != "failed":
            self._write_result_files(b)
        ok = sum(1 for r in b.requests if r.ended_as == "succeeded")
        failed = sum(1 for r in b.requests if r.ended_as in ("errored", "expired", "canceled")) if ended else 0
        ts = int(b.created)
        end = int(b.ended) if b.ended is not None else None
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.extra["endpoint"],
            "errors": {"object": "list", "data": b.extra["errors"]} if b.extra.get("errors") else None,
            "input_file_id": b.extra["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "output_file_id": b.extra.get("output_file_id"),
            "error_file_id": b.extra.get("error_file_id"),
            "created_at": ts,
            "in_progress_at": ts if status != "validating" else None,
            "expires_at": ts + 86400,
            "finalizing_at": end if ended and b.outcome == "completed" else None,
            "completed_at": end if ended and b.outcome == "completed" else None,
            "failed_at": end if b.outcome == "failed" and ended else None,
            "expired_at": end if b.outcome == "expired" and ended else None,
            "cancelling_at": int(b.cancel_at) if b.cancel_at else None,
            "cancelled_at": end if b.outcome == "cancelled" and ended else None,
            "request_counts": {"total": len(b.requests), "completed": ok if ended else 0, "failed": failed},
            "metadata": b.metadata,
            "model": b.requests[0].body.get("model") if b.requests else None,
            "usage": None,
        }

    def _write_result_files(self, b: EmuBatch) -> None:
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for r in b.requests:
            line: dict[str, Any] = {"id": new_id("batch_req_", 32), "custom_id": r.custom_id}
            if r.status is not None:
                line["response"] = {"status_code": r.status, "request_id": new_id("req_", 24), "body": r.answer}
                line["error"] = None
                (out if r.status == 200 else err).append(line)
            else:
                code = "batch_expired" if r.ended_as == "expired" else "batch_cancelled"
                text = (
                    "This request could not be executed before the completion window expired."
                    if code == "batch_expired"
                    else "This request was not executed because the batch was cancelled."
                )
                err.append({**line, "response": None, "error": {"code": code, "message": text}})
        for kind, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = new_id("file-", 24)
                data = "".join(json.dumps(x) + "\n" for x in rows).encode()
                self.files[fid] = {
                    "data": data,
                    "meta": {
                        "id": fid,
                        "object": "file",
                        "bytes": len(data),
                        "created_at": int(time.time()),
                        "filename": f"{b.id}_{kind[:-8]}.jsonl",
                        "purpose": "batch_output",
                        "status": "processed",
                        "expires_at": None,
                        "status_details": None,
                    },
                }
                b.extra[kind] = fid
            else:
                b.extra[kind] = None
