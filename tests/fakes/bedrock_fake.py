"""A fake Amazon Bedrock Runtime speaking Converse / ConverseStream over a real socket.

Same machinery, behaviours and recording API as FakeOpenAI (tests.fakes.base).
Endpoints: `POST /model/{modelId}/converse` (JSON) and `/converse-stream` (binary
`application/vnd.amazon.eventstream` frames, see `encode_frame`), `/invoke` for the
Titan and Cohere embedding models (see `_invoke`), plus
`GET /foundation-models` (the control plane's listing, for convenience).

Every request must carry a SigV4 `Authorization: AWS4-HMAC-SHA256 Credential=AKID/
DATE/REGION/bedrock/aws4_request, SignedHeaders=..., Signature=...` and `x-amz-date`.
The fake parses it into `Recorded.notes["sigv4"]` and, unless
`verify_signature=False`, recomputes the signature with its own secret key (an
implementation independent of botocore: `sigv4_signature`) and answers AWS's 403s
(MissingAuthenticationToken, UnrecognizedClient, InvalidSignature, IncompleteSignature)
when it does not match, the scope is wrong or the clock is off by over 5 minutes.
Errors are `{"message": ...}` with `x-amzn-errortype: <Type>:http://internal...`.

Deterministic answers: text "Hello from <name>" (cut to `inferenceConfig.maxTokens`
pieces with stopReason max_tokens), prompt tokens by `prompt_tokens_for(body)`, a
`toolUse` block when a ToolCall is scripted or the last user message names a tool
of `toolConfig`. `inputTokens` is the uncached part (cache read/write reported apart,
as Bedrock does); `totalTokens` counts all of them. Stream payloads carry a `"p"`
padding field like the real service's, which clients must ignore.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import struct
import uuid
import zlib
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from tests.fakes.base import (
    Answer,
    Behaviour,
    Fail,
    FakeUpstream,
    Ok,
    Recorded,
    StreamError,
    chat_prompt_tokens,
    dumps,
    embedding_for,
    pick_tool,
    text_of,
)

__all__ = [
    "EVENTSTREAM_CONTENT_TYPE",
    "FakeBedrock",
    "decode_frames",
    "encode_frame",
    "prompt_tokens_for",
    "request_tools",
    "sigv4_signature",
]

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
    529: "ServiceUnavailableException",
}
_STREAM_EXCEPTIONS = {
    400: "validationException",
    424: "modelStreamErrorException",
    429: "throttlingException",
    503: "serviceUnavailableException",
    529: "serviceUnavailableException",
}
_MESSAGES = {
    400: "The provided request is not valid",
    403: "You don't have access to the model with the specified model ID.",
    404: "The provided model identifier is invalid.",
    429: "Too many requests, please wait before trying again.",
    500: "The system encountered an unexpected error during processing. Try your request again.",
    503: "Bedrock is unable to process your request.",
}
_ERRORTYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
CONVERSE_FIELDS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
    }
)
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
_PATH_RE = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,\s*"
    r"SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})\s*$"
)
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MAX_SKEW = 300.0


# --------------------------------------------------------------------------- event stream


def encode_frame(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32),
    string-typed (7) headers, payload, CRC32 of everything before it."""
    hbytes = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        hbytes += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(hbytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hbytes))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + hbytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def decode_frames(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Parse event-stream messages (string headers only), checking both CRCs."""
    out = []
    pos = 0
    while pos < len(data):
        total, hlen = struct.unpack_from(">II", data, pos)
        (pcrc,) = struct.unpack_from(">I", data, pos + 8)
        if zlib.crc32(data[pos : pos + 8]) != pcrc:
            raise ValueError("prelude CRC mismatch")
        (mcrc,) = struct.unpack_from(">I", data, pos + total - 4)
        if zlib.crc32(data[pos : pos + total - 4]) != mcrc:
            raise ValueError("message CRC mismatch")
        headers: dict[str, str] = {}
        h = pos + 12
        while h < pos + 12 + hlen:
            nlen = data[h]
            name = data[h + 1 : h + 1 + nlen].decode()
            vtype = data[h + 1 + nlen]
            if vtype != 7:
                raise ValueError(f"header value type {vtype} not supported")
            (vlen,) = struct.unpack_from(">H", data, h + 2 + nlen)
            headers[name] = data[h + 4 + nlen : h + 4 + nlen + vlen].decode()
            h += 4 + nlen + vlen
        out.append((headers, data[pos + 12 + hlen : pos + total - 4]))
        pos += total
    return out


def _event(event_type: str, payload: dict, seq: int) -> bytes:
    padded = {**payload, "p": _PAD[: 1 + (seq * 7) % len(_PAD)]}
    return encode_frame(
        [
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        dumps(padded).encode(),
    )


# --------------------------------------------------------------------------- SigV4


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _canonical_query(raw_query: str) -> str:
    pairs = []
    for part in raw_query.split("&"):
        if part:
            k, _, v = part.partition("=")
            pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def sigv4_signature(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: CIMultiDict[str],
    signed_headers: list[str],
    body: bytes,
    amz_date: str,
    region: str,
    service: str,
    secret_key: str,
) -> tuple[str, str]:
    """(signature, canonical request) per AWS Signature Version 4, for a non-S3
    service: the already-encoded path is URI-encoded once more."""
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in headers.getall(name, []))}\n"
        for name in signed_headers
    )
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [
            method,
            quote(raw_path or "/", safe="/~"),
            _canonical_query(raw_query),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret_key).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), canonical


# --------------------------------------------------------------------------- request model


def prompt_tokens_for(body: Any) -> int:
    """Prompt tokens the fake computes: `chat_prompt_tokens` over the system blocks'
    text (if any) and each message's text blocks — the same as the OpenAI chat rule."""
    if not isinstance(body, dict):
        return 0
    texts = [text_of(body["system"])] if body.get("system") else []
    texts += [text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)]
    return chat_prompt_tokens(texts)


def request_tools(body: Any) -> list[tuple[str, Any]]:
    """(name, inputSchema.json) of each `toolSpec` in `toolConfig.tools`."""
    config = body.get("toolConfig") if isinstance(body, dict) else None
    out: list[tuple[str, Any]] = []
    for t in config.get("tools") or [] if isinstance(config, dict) else []:
        spec = t.get("toolSpec") if isinstance(t, dict) else None
        if isinstance(spec, dict):
            schema = spec.get("inputSchema")
            out.append(
                (
                    str(spec.get("name", "")),
                    schema.get("json") if isinstance(schema, dict) else None,
                )
            )
    return out


def _last_user_text(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def _validate(body: dict) -> str | None:
    for key in body:
        if key not in CONVERSE_FIELDS:
            return (
                f"Malformed input request: extraneous key [{key}] is not permitted, "
                "please reformat your input and try again."
            )
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        return (
            "1 validation error detected: Value null at 'messages' failed to satisfy "
            "constraint: Member must not be null"
        )
    for i, m in enumerate(msgs, start=1):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            return (
                f"1 validation error detected: Value '{role}' at 'messages.{i}.member.role' "
                "failed to satisfy constraint: Member must satisfy enum value set: "
                "[user, assistant]"
            )
        if not isinstance(m.get("content"), list):
            return (
                f"1 validation error detected: Value at 'messages.{i}.member.content' failed "
                "to satisfy constraint: Member must not be null"
            )
    return None


# --------------------------------------------------------------------------- the fake


class FakeBedrock(FakeUpstream):
    """Fake Bedrock Runtime; see the module docstring."""

    default_models = ["anthropic.claude-3-haiku-20240307-v1:0", "amazon.nova-lite-v1:0"]
    sse_content_type = EVENTSTREAM_CONTENT_TYPE

    def __init__(
        self,
        name: str = "bedrock",
        *,
        models: list[str] | None = None,
        port: int = 0,
        behaviour: Behaviour | None = None,
        region: str = "us-east-1",
        access_key: str = "AKIAFAKEFASTGATE0001",
        secret_key: str = "fake/secret/key/for/fastgate/tests0000001",
        session_token: str | None = None,
        verify_signature: bool = True,
    ) -> None:
        super().__init__(name, models=models, port=port, behaviour=behaviour)
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.verify_signature = verify_signature

    # ------------------------------------------------------------------ hooks

    def _new_request_id(self) -> str:
        return str(uuid.uuid4())

    def _headers(
        self, rec: Recorded, content_type: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        headers = {"content-type": content_type, "x-amzn-requestid": rec.response_request_id}
        if extra:
            headers.update(extra)
        return headers

    def _error_doc(self, status: int, message: str | None, rec: Recorded) -> dict:
        return {"message": message or _MESSAGES.get(status, f"fake upstream error {status}")}

    def _fail_headers(self, fail: Fail, rec: Recorded) -> dict[str, str]:
        etype = _ERROR_TYPES.get(fail.status, "InternalServerException")
        return {"x-amzn-errortype": etype + _ERRORTYPE_SUFFIX}

    def _stream_error_event(self, err: StreamError, rec: Recorded) -> bytes:
        name = _STREAM_EXCEPTIONS.get(err.status, "internalServerException")
        doc = self._error_doc(err.status, err.message, rec)
        return encode_frame(
            [
                (":exception-type", name),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            dumps(doc).encode(),
        )

    def _aws_error(self, rec: Recorded, status: int, etype: str, message: str) -> web.Response:
        headers = {"x-amzn-errortype": etype + _ERRORTYPE_SUFFIX}
        return self._fail_response(rec, Fail(status, body={"message": message}, headers=headers))

    # ------------------------------------------------------------------ auth

    def _check_auth(self, request: BaseRequest, rec: Recorded) -> web.Response | None:
        auth = rec.headers.get("authorization")
        if not auth:
            return self._aws_error(
                rec, 403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        m = _AUTH_RE.match(auth)
        if not m:
            return self._aws_error(
                rec,
                403,
                "IncompleteSignatureException",
                f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
                f"parameters. Authorization={auth}",
            )
        access_key, date, region, service, signed, signature = m.groups()
        amz_date = rec.headers.get("x-amz-date", "")
        info: dict[str, Any] = {
            "access_key": access_key,
            "date": date,
            "region": region,
            "service": service,
            "signed_headers": signed.split(";"),
            "signature": signature,
            "amz_date": amz_date,
            "valid": False,
            "error": None,
        }
        rec.notes["sigv4"] = info

        def deny(status: int, etype: str, message: str) -> web.Response:
            info["error"] = etype
            return self._aws_error(rec, status, etype, message)

        if not amz_date:
            return deny(
                403,
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                "'Date' header.",
            )
        if access_key != self.access_key:
            return deny(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if self.session_token is not None and (
            rec.headers.get("x-amz-security-token") != self.session_token
        ):
            return deny(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if not self.verify_signature:
            return None
        if service != "bedrock":
            return deny(
                403,
                "InvalidSignatureException",
                "Credential should be scoped to correct service: 'bedrock'.",
            )
        if region != self.region:
            return deny(
                403, "InvalidSignatureException", "Credential should be scoped to a valid region."
            )
        if date != amz_date[:8]:
            return deny(
                403,
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                "date from HTTP",
            )
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return deny(403, "IncompleteSignatureException", f"Invalid X-Amz-Date {amz_date}")
        skew = abs(dt.datetime.now(dt.UTC).timestamp() - when.timestamp())
        if skew > MAX_SKEW:
            return deny(
                403, "InvalidSignatureException", f"Signature expired: {amz_date} is out of range"
            )
        if "host" not in info["signed_headers"]:
            return deny(
                403,
                "InvalidSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )
        claimed = rec.headers.get("x-amz-content-sha256")
        if claimed not in (None, "UNSIGNED-PAYLOAD", hashlib.sha256(rec.body).hexdigest()):
            return deny(
                403,
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        raw_path, _, raw_query = request.raw_path.partition("?")
        expected, canonical = sigv4_signature(
            method=request.method,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=rec.headers,
            signed_headers=info["signed_headers"],
            body=rec.body,
            amz_date=amz_date,
            region=region,
            service=service,
            secret_key=self.secret_key,
        )
        info["canonical_request"] = canonical
        if not hmac.compare_digest(expected, signature):
            return deny(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult the "
                "service documentation for details.",
            )
        info["valid"] = True
        return None

    # ------------------------------------------------------------------ routing

    async def _route(
        self, request: BaseRequest, rec: Recorded, behaviour: Behaviour
    ) -> web.StreamResponse:
        raw_path = request.raw_path.partition("?")[0]
        m = _PATH_RE.match(raw_path)
        listing = request.method == "GET" and raw_path == "/foundation-models"
        if not m and not listing:
            return self._aws_error(rec, 404, "UnknownOperationException", "Unknown operation")
        denied = self._check_auth(request, rec)
        if denied is not None:
            return denied
        if listing:
            return self._json(rec, {"modelSummaries": [self._summary(x) for x in self.models]})
        assert m is not None
        if request.method != "POST":
            return self._aws_error(rec, 404, "UnknownOperationException", "Unknown operation")
        model_id = unquote(m.group(1))
        rec.notes["model_id"] = model_id
        body = rec.json
        if not isinstance(body, dict):
            return self._error(rec, 400, "Malformed input request, please reformat your input.")
        if m.group(2) == "invoke":
            return self._invoke(rec, model_id, body, behaviour)
        problem = _validate(body)
        if problem:
            return self._error(rec, 400, problem)

        config = (
            body.get("inferenceConfig") if isinstance(body.get("inferenceConfig"), dict) else {}
        )
        max_tokens = config.get("maxTokens")
        tool = pick_tool(request_tools(body), _last_user_text(body))
        ans = self._answer(
            behaviour,
            rec,
            computed_prompt=prompt_tokens_for(body),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            tool=tool,
            tool_id="tooluse_" + uuid.uuid4().hex[:22],
        )
        rec.notes["usage_wire"] = self._usage(ans)
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if ok.first_byte_delay:
            await asyncio.sleep(ok.first_byte_delay)
        if m.group(2) == "converse":
            return await self._answer_once(request, rec, behaviour, ok, self._response(ans))
        return await self._stream(request, rec, behaviour, ok, self._events(ans))

    def _invoke(
        self, rec: Recorded, model_id: str, body: dict, behaviour: Behaviour
    ) -> web.Response:
        """InvokeModel for the embedding models: Titan (`inputText` -> `embedding`,
        `inputTextTokenCount`, `embeddingsByType`; 1024 values unless `dimensions`)
        and Cohere (`texts` + `input_type` -> `embeddings`, 1024 values, or
        `output_dimension`). Tokens = words; the count is also in the
        `X-Amzn-Bedrock-Input-Token-Count` header, as Bedrock sends it."""
        ok = behaviour if isinstance(behaviour, Ok) else Ok()
        if "titan-embed" in model_id:
            text = body.get("inputText")
            extra = set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}
            if not isinstance(text, str) or extra:
                return self._validation(
                    rec,
                    "Malformed input request: "
                    + (
                        f"extraneous key [{sorted(extra)[0]}] is not permitted"
                        if extra
                        else "required key [inputText] not found"
                    ),
                )
            texts = [text]
            vec = embedding_for(text, int(body.get("dimensions") or 1024))
        elif "cohere.embed" in model_id:
            texts = body.get("texts")
            allowed = {"texts", "input_type", "truncate", "embedding_types", "output_dimension"}
            if (
                not isinstance(texts, list)
                or not isinstance(body.get("input_type"), str)
                or set(body) - allowed
            ):
                return self._validation(
                    rec, "Malformed input request: texts and input_type are required"
                )
            dims = int(body.get("output_dimension") or 1024)
        else:
            return self._validation(
                rec, f"The provided model {model_id} does not support InvokeModel here"
            )
        n = sum(len(t.split()) for t in texts)
        if ok.prompt_tokens is not None:
            n = ok.prompt_tokens
        rec.usage = {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n}
        if "titan-embed" in model_id:
            doc: dict[str, Any] = {
                "embedding": vec,
                "inputTextTokenCount": n,
                "embeddingsByType": {"float": vec},
            }
        else:
            doc = {
                "embeddings": [embedding_for(t, dims) for t in texts],
                "id": str(uuid.uuid4()),
                "response_type": "embeddings_floats",
                "texts": texts,
            }
        headers = {
            "X-Amzn-Bedrock-Input-Token-Count": str(n),
            "X-Amzn-Bedrock-Invocation-Latency": "42",
            **(ok.headers or {}),
        }
        return self._json(rec, doc, extra=headers)

    def _validation(self, rec: Recorded, message: str) -> web.Response:
        return self._aws_error(rec, 400, "ValidationException", message)

    # ------------------------------------------------------------------ wire format

    def _summary(self, model_id: str) -> dict:
        provider = model_id.split(".")[0]
        return {
            "modelArn": f"arn:aws:bedrock:{self.region}::foundation-model/{model_id}",
            "modelId": model_id,
            "modelName": model_id.split(".", 1)[-1],
            "providerName": provider.capitalize(),
            "inputModalities": ["TEXT"],
            "outputModalities": ["TEXT"],
            "responseStreamingSupported": True,
            "customizationsSupported": [],
            "inferenceTypesSupported": ["ON_DEMAND"],
            "modelLifecycle": {"status": "ACTIVE"},
        }

    @staticmethod
    def _usage(ans: Answer) -> dict:
        usage = {
            "inputTokens": ans.uncached_tokens,
            "outputTokens": ans.completion_tokens,
            "totalTokens": ans.total_tokens,
        }
        if ans.cached_tokens:
            usage["cacheReadInputTokens"] = ans.cached_tokens
        if ans.cache_write_tokens:
            usage["cacheWriteInputTokens"] = ans.cache_write_tokens
        return usage

    @staticmethod
    def _latency(ans: Answer) -> int:
        return 100 + 10 * ans.completion_tokens

    def _response(self, ans: Answer) -> dict:
        content: list[dict] = []
        if ans.text or ans.tool_name is None:
            content.append({"text": ans.text})
        if ans.tool_name is not None:
            content.append(
                {
                    "toolUse": {
                        "toolUseId": ans.tool_id,
                        "name": ans.tool_name,
                        "input": ans.tool_input,
                    }
                }
            )
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _STOP[ans.stop],
            "usage": self._usage(ans),
            "metrics": {"latencyMs": self._latency(ans)},
        }

    def _events(self, ans: Answer) -> list[bytes]:
        payloads: list[tuple[str, dict]] = [("messageStart", {"role": "assistant"})]
        index = 0
        if ans.pieces:
            for p in ans.pieces:
                payloads.append(
                    ("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": p}})
                )
            payloads.append(("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        if ans.tool_name is not None:
            start = {"toolUse": {"toolUseId": ans.tool_id, "name": ans.tool_name}}
            payloads.append(("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            for p in ans.tool_pieces:
                payloads.append(
                    (
                        "contentBlockDelta",
                        {"contentBlockIndex": index, "delta": {"toolUse": {"input": p}}},
                    )
                )
            payloads.append(("contentBlockStop", {"contentBlockIndex": index}))
        payloads.append(("messageStop", {"stopReason": _STOP[ans.stop]}))
        payloads.append(
            (
                "metadata",
                {"usage": self._usage(ans), "metrics": {"latencyMs": self._latency(ans)}},
            )
        )
        return [_event(name, payload, i) for i, (name, payload) in enumerate(payloads)]
