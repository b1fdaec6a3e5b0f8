"""The OpenAI endpoints that name no model, for FakeOpenAI: files, batches, audio
transcriptions and image generation, in OpenAI's wire format.

- `POST /v1/files` (multipart `file`, `purpose`): read part by part as it arrives
  (`Recorded.notes`: `first_body_at`, the monotonic time of the first body bytes,
  and `body_done_at`); the file is kept (`FakeOpenAI.files[id]` = bytes) and
  answered as OpenAI's file object. `GET /v1/files` (the list, `purpose` filter),
  `GET /v1/files/{id}`, `GET /v1/files/{id}/content` (the bytes,
  `application/octet-stream`), `DELETE /v1/files/{id}`.
- `POST /v1/batches` (`input_file_id` of a stored file, `endpoint`,
  `completion_window`), `GET /v1/batches/{id}`: a batch object, `completed` when
  retrieved, with the `usage` OpenAI reports for a batch (input/output tokens).
- `add_batch_output(results)`: a batch output file in OpenAI's format (one
  line per request: `{"id","custom_id","response":{"status_code","request_id",
  "body"},"error"}`, chat completion bodies with the scripted model and usage;
  a result without usage is a failed request, `response` null and `error` set),
  stored as a file of purpose `batch_output` and served by `.../content`.
- `POST /v1/audio/transcriptions` (multipart `file`, `model`): `{"text","usage"}`
  with token usage as gpt-4o-transcribe reports it (input = audio bytes / 1000,
  output = words of the text).
- `POST /v1/images/generations`: `{"created","data":[{"b64_json"}],"usage"}` as
  gpt-image-1 reports it (input = words of the prompt, output = 272).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from tests.fakes.base import CREATED, Recorded

TRANSCRIPT = "hello from the fake transcriber"
IMAGE_OUTPUT_TOKENS = 272


def _err(status: int, message: str, code: str | None = None) -> dict:
    etype = "invalid_request_error"
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


class OpenAIFiles:
    """Mixin for FakeOpenAI (needs `_json`, `_fail_response`, `_lock`)."""

    files: dict[str, bytes]
    file_objects: dict[str, dict]
    batches: dict[str, dict]

    def _init_files(self) -> None:
        self.files = {}
        self.file_objects = {}
        self.batches = {}

    def _streams_body(self, request: BaseRequest) -> bool:
        return request.content_type.startswith("multipart/")

    async def _no_model_route(
        self, request: BaseRequest, rec: Recorded
    ) -> web.StreamResponse | None:
        """The answer for these endpoints, or None for a path they do not cover."""
        path, method = request.path, request.method
        parts = path.split("/")  # "", "v1", kind, id?, sub?
        kind = parts[2] if len(parts) > 2 else ""
        if kind == "files":
            return await self._files(request, rec, method, parts[3:])
        if kind == "batches":
            return self._batches(rec, method, parts[3:])
        if path == "/v1/audio/transcriptions" and method == "POST":
            return await self._transcribe(request, rec)
        if path == "/v1/images/generations" and method == "POST":
            return self._image(rec)
        return None

    def _missing(self, rec: Recorded, what: str) -> web.Response:
        return self._fail(rec, 404, f"No such {what}", None)

    def _fail(self, rec: Recorded, status: int, msg: str, code: str | None) -> web.Response:
        from tests.fakes.base import Fail

        return self._fail_response(rec, Fail(status, body=_err(status, msg, code)))

    # -- files -----------------------------------------------------------------------

    async def _read_form(self, request: BaseRequest, rec: Recorded) -> dict[str, Any]:
        """Every part of a multipart body: text fields as str, the file as
        (filename, bytes, content type); body timings and bytes in `rec`."""
        reader = await request.multipart()
        form: dict[str, Any] = {}
        raw = bytearray()
        while True:
            part = await reader.next()
            if part is None:
                break
            if part.filename is not None:
                data = bytearray()
                while True:
                    chunk = await part.read_chunk(65536)
                    if not chunk:
                        break
                    rec.notes.setdefault("first_body_at", time.monotonic())
                    data += chunk
                ctype = part.headers.get("content-type", "application/octet-stream")
                form[part.name] = (part.filename, bytes(data), ctype)
                raw += data
            else:
                rec.notes.setdefault("first_body_at", time.monotonic())
                form[part.name] = (await part.read()).decode()
        rec.notes["body_done_at"] = time.monotonic()
        rec.body = bytes(raw)
        return form

    async def _files(
        self, request: BaseRequest, rec: Recorded, method: str, rest: list[str]
    ) -> web.StreamResponse:
        if not rest and method == "POST":
            form = await self._read_form(request, rec)
            if "file" not in form or not isinstance(form.get("purpose"), str):
                return self._fail(rec, 400, "'file' and 'purpose' are required", None)
            name, data, _ = form["file"]
            fid = "file-" + uuid.uuid4().hex[:24]
            obj = {
                "id": fid,
                "object": "file",
                "bytes": len(data),
                "created_at": CREATED,
                "filename": name,
                "purpose": form["purpose"],
                "status": "processed",
                "expires_at": None,
                "status_details": None,
            }
            with self._lock:
                self.files[fid] = data
                self.file_objects[fid] = obj
            return self._json(rec, obj)
        if not rest and method == "GET":
            purpose = rec.query_params.get("purpose")
            data = [o for o in self.file_objects.values() if purpose in (None, o["purpose"])]
            doc = {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
            return self._json(rec, doc)
        fid = rest[0] if rest else ""
        obj = self.file_objects.get(fid)
        if obj is None:
            return self._missing(rec, f"File: {fid}")
        if len(rest) == 2 and rest[1] == "content" and method == "GET":
            rec.status, rec.completed = 200, True
            return web.Response(
                body=self.files[fid], headers={"content-type": "application/octet-stream"}
            )
        if len(rest) == 1 and method == "GET":
            return self._json(rec, obj)
        if len(rest) == 1 and method == "DELETE":
            with self._lock:
                del self.file_objects[fid]
                del self.files[fid]
            return self._json(rec, {"id": fid, "object": "file", "deleted": True})
        return self._fail(rec, 404, f"Invalid URL ({method} {request.path})", None)

    def add_batch_output(self, results: list[tuple[str, dict | None]], pad: int = 0) -> str:
        """Store a batch output file: one line per (model, usage) result (usage
        None: a failed request); each answer's text is `pad` characters long.
        Returns the file id."""
        lines = []
        for i, (model, usage) in enumerate(results):
            line: dict[str, Any] = {"id": f"batch_req_{i}", "custom_id": f"request-{i}"}
            if usage is None:
                line["response"] = None
                line["error"] = {"code": "batch_expired", "message": "not completed in time"}
            else:
                body = {
                    "id": f"chatcmpl-{i}",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "x" * pad},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                }
                line["response"] = {"status_code": 200, "request_id": f"req_{i}", "body": body}
                line["error"] = None
            lines.append(json.dumps(line, separators=(",", ":")))
        data = ("\n".join(lines) + "\n").encode()
        fid = "file-" + uuid.uuid4().hex[:24]
        obj = {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": CREATED,
            "filename": "batch_output.jsonl",
            "purpose": "batch_output",
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        with self._lock:
            self.files[fid] = data
            self.file_objects[fid] = obj
        return fid

    # -- batches -------------------------------------------------------------------------

    def _batches(self, rec: Recorded, method: str, rest: list[str]) -> web.StreamResponse:
        if not rest and method == "POST":
            body = rec.json if isinstance(rec.json, dict) else {}
            fid = body.get("input_file_id")
            if fid not in self.file_objects:
                return self._fail(rec, 400, f"Invalid 'input_file_id': '{fid}'.", None)
            bid = "batch_" + uuid.uuid4().hex[:24]
            batch = {
                "id": bid,
                "object": "batch",
                "endpoint": body.get("endpoint"),
                "errors": None,
                "input_file_id": fid,
                "completion_window": body.get("completion_window"),
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": CREATED,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
            }
            with self._lock:
                self.batches[bid] = batch
            return self._json(rec, batch)
        batch = self.batches.get(rest[0]) if len(rest) == 1 and method == "GET" else None
        if batch is None:
            return self._missing(rec, "batch")
        done = dict(
            batch,
            status="completed",
            request_counts={"total": 2, "completed": 2, "failed": 0},
            usage={
                "input_tokens": 40,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 12,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 52,
            },
        )
        return self._json(rec, done)

    # -- audio, images -----------------------------------------------------------------------

    async def _transcribe(self, request: BaseRequest, rec: Recorded) -> web.StreamResponse:
        form = await self._read_form(request, rec)
        if "file" not in form or not isinstance(form.get("model"), str):
            return self._fail(rec, 400, "'file' and 'model' are required", None)
        audio = len(form["file"][1])
        out = len(TRANSCRIPT.split())
        usage = {
            "type": "tokens",
            "input_tokens": audio // 1000,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio // 1000},
            "output_tokens": out,
            "total_tokens": audio // 1000 + out,
        }
        rec.usage = {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": out,
            "total_tokens": usage["total_tokens"],
        }
        rec.notes["form"] = {k: v for k, v in form.items() if isinstance(v, str)}
        return self._json(rec, {"text": TRANSCRIPT, "usage": usage})

    def _image(self, rec: Recorded) -> web.StreamResponse:
        body = rec.json if isinstance(rec.json, dict) else {}
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return self._fail(rec, 400, "Missing required parameter: 'prompt'.", None)
        n = len(prompt.split())
        rec.usage = {
            "prompt_tokens": n,
            "completion_tokens": IMAGE_OUTPUT_TOKENS,
            "total_tokens": n + IMAGE_OUTPUT_TOKENS,
        }
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()
        doc = {
            "created": CREATED,
            "data": [{"b64_json": png}],
            "usage": {
                "input_tokens": n,
                "input_tokens_details": {"text_tokens": n, "image_tokens": 0},
                "output_tokens": IMAGE_OUTPUT_TOKENS,
                "total_tokens": n + IMAGE_OUTPUT_TOKENS,
            },
        }
        return self._json(rec, doc)
