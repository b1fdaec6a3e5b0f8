"""OpenAI calls that name no model: files, batches, uploads, audio, images, fine-tuning...

An OpenAI SDK pointed at the gateway makes calls beyond the model-routed ones
(`chat/completions`, `completions`, `embeddings`, `responses`, and any other
POST whose JSON body names a `model`). Those go upstream as they are:

- which: every other `GET`, `DELETE`, `PUT` and `PATCH` under `/v1/`, a `POST`
  whose body is not a JSON object with a `model` (`batches`, `.../cancel`,
  `files` uploads...), and every `multipart/*` body (not parsed: it may be
  large, so it is streamed by `http/upload.py`, never read whole);
- where: the channel the request's `x-fastgate-channel` header names, or else
  the key's group's first OpenAI-wire channel by priority (config order among
  equals), of a type that takes the client's own path (`openai`, `openrouter`).
  One channel, no failover: files, batches and fine-tuning jobs live in one
  upstream account, so the same call always reaches the same channel;
- who: a key without a `models` allow-list (such calls can reach any model, say
  through a batch file, so an allow-listed key is refused with 403);
- billing: quota, budgets and rate limits apply as to any request; the usage
  record has no model, and counts the tokens of a `usage` object in the JSON
  answer to a POST (audio transcriptions report one); GET and DELETE answers
  are not read (a retrieved batch or response reports usage that was billed
  when it was made), so their records carry no tokens and no cost. One
  exception: the content of a batch output file (`GET /v1/files/{id}/content`)
  is scanned as it passes and its results billed at the batch price when the
  download completes (`batch_billing.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastgate import errors
from fastgate.gateway import protocols
from fastgate.vocab.protocols import OPENAI

if TYPE_CHECKING:
    from fastgate.gateway.context import RequestContext
    from fastgate.snapshot import Channel, Snapshot, Token

PASSTHROUGH = "passthrough"
# Two ingresses, both OpenAI's protocol: a POST's answer is read for usage, the
# others' are not (see the module docstring).
POST_INGRESS = protocols.Ingress(OPENAI, PASSTHROUGH)
PLAIN_INGRESS = protocols.Ingress(OPENAI, PASSTHROUGH)
# A third: `GET /v1/files/{id}/content`, read for batch results (`batch_billing.py`).
FILE_CONTENT = protocols.Ingress(OPENAI, PASSTHROUGH)

# Endpoints routed by the model of their JSON body (never passed through modelless).
MODEL_PATHS = frozenset(
    {
        b"/v1/chat/completions",
        b"/v1/completions",
        b"/v1/embeddings",
        b"/v1/responses",
        b"/v1/messages",
        b"/v1/messages/count_tokens",
    }
)
METHODS = frozenset({b"GET", b"POST", b"DELETE", b"PUT", b"PATCH"})


def classify(ctx: RequestContext) -> None:
    """Make `ctx` a passthrough request, or raise the error its path deserves."""
    head = ctx.head
    path = head.path
    method = head.method
    if method not in METHODS or not path.startswith(b"/v1/"):
        raise errors.NotFound(f"no route for {method.decode()} {path.decode('latin-1')}")
    if method == b"POST" and path in MODEL_PATHS:
        raise errors.InvalidRequest(f"{path.decode('latin-1')} takes a JSON body")
    if path.startswith(b"/v1/messages"):  # Anthropic's, and answered by model only
        raise errors.NotFound(f"no route for {method.decode()} {path.decode('latin-1')}")
    if method == b"POST":
        ctx.ingress = POST_INGRESS
    elif method == b"GET" and path.endswith(b"/content") and path.startswith(b"/v1/files/"):
        ctx.ingress = FILE_CONTENT
    else:
        ctx.ingress = PLAIN_INGRESS
    ctx.model = ctx.requested = ""


def candidates(snap: Snapshot, ctx: RequestContext, token: Token) -> list[Channel]:
    """The one channel a passthrough request goes to (see the module docstring)."""
    if token.models is not None:
        raise errors.PermissionDenied(
            "this API key may use only its listed models; calls that name no model "
            "(files, batches, audio uploads...) need a key without a models allow-list"
        )
    usable = [c for c in snap.channels.values() if token.group in c.groups and c.kind.fast_path]
    want = ctx.head.channel
    if want:
        name = want.decode("latin-1")
        for c in usable:
            if c.name == name:
                return [c]
        raise errors.NotFound(
            f"x-fastgate-channel: no channel '{name}' of type openai or openrouter "
            f"in group '{token.group}'"
        )
    if not usable:
        raise errors.NotFound(
            f"no channel of type openai or openrouter in group '{token.group}' serves "
            f"{ctx.head.path.decode('latin-1')}"
        )
    best = usable[0]
    for c in usable:
        if c.priority > best.priority:
            best = c
    return [best]


def request_head(ex: Any, ch: Channel) -> bytes:
    """The upstream request: the client's method, path, query, headers and body
    (a streamed body follows the head: `http.upload.Upload.attach`)."""
    head = ex.ctx.head
    target = ch.path_prefix + head.path
    if head.query:
        target += b"?" + head.query
    parts = [head.method, b" ", target, b" HTTP/1.1\r\n", ch.static_headers]
    if head.content_type:
        parts += (b"content-type: ", head.content_type, b"\r\n")
    parts += head.forward
    if head.upload is not None:
        if head.content_length:
            parts.append(b"content-length: %b\r\n\r\n" % head.content_length)
        else:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
        return b"".join(parts)
    body = head.body
    if body or head.method in (b"POST", b"PUT", b"PATCH"):
        parts.append(b"content-length: %d\r\n" % len(body))
    parts += (b"\r\n", body)
    return b"".join(parts)
