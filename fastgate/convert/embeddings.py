"""OpenAI embeddings to and from the embedding APIs of Gemini, Ollama and Bedrock.

An OpenAI `POST /v1/embeddings` body (`model`, `input`, `dimensions`,
`encoding_format`, `user`) becomes:

- Gemini: `models/{m}:embedContent` `{"content":{"parts":[{"text"}]}}` for one
  string, `models/{m}:batchEmbedContents` `{"requests":[{"model":"models/{m}",
  "content":...}]}` for a list; `dimensions` -> `outputDimensionality`. The
  Gemini API reports no token counts for embeddings (Vertex's `usageMetadata`
  is read when present): the usage is then the gateway's estimate.
- Ollama: `/api/embed` `{"model","input"}` (`dimensions` as it is);
  `prompt_eval_count` is the usage.
- Bedrock InvokeModel: Titan (`amazon.titan-embed-*`) `{"inputText"}`, one text
  a call (a list of more than one is refused: the gateway does not fan out);
  `dimensions` as it is. Cohere (`cohere.embed-*`) `{"texts","input_type"}`
  (`input_type` defaults to `search_document`, or the body's own `input_type`);
  `dimensions` -> `output_dimension` (Embed v4). Usage: Titan's
  `inputTextTokenCount`, else the `x-amzn-bedrock-input-token-count` header.

The answer is OpenAI's `{"object":"list","data":[{"object":"embedding","index",
"embedding"}],"model","usage":{"prompt_tokens","total_tokens"}}`;
`encoding_format: "base64"` (the openai SDK's default) is honoured by packing
each vector as little-endian float32, as OpenAI does. Token-id inputs (lists of
integers) cannot be sent to these APIs and are refused, as is any other
encoding format. Dropped as hints: `user`.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from fastgate.convert.errors import ConversionError, UpstreamProtocolError
from fastgate.vocab.usage import Usage, count

__all__ = [
    "bedrock_embed_kind",
    "bedrock_embed_request",
    "bedrock_embed_response",
    "embed_texts",
    "gemini_embed_request",
    "gemini_embed_response",
    "ollama_embed_request",
    "ollama_embed_response",
    "openai_embeddings",
]

FORMATS = (None, "float", "base64")
TITAN, COHERE = "titan", "cohere"


def embed_texts(req: dict[str, Any], target: str) -> list[str]:
    """The texts of an OpenAI embeddings request (a string, or a list of strings)."""
    fmt = req.get("encoding_format")
    if fmt not in FORMATS:
        raise ConversionError(
            f"encoding_format must be 'float' or 'base64' for a {target} channel, not {fmt!r}"
        )
    inp = req.get("input")
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
        return inp
    if isinstance(inp, list) and inp:
        raise ConversionError(
            f"token-id input cannot be sent to a {target} channel: send the text itself"
        )
    raise ConversionError("'input' must be a non-empty string or list of strings")


def _dimensions(req: dict[str, Any]) -> int | None:
    dims = req.get("dimensions")
    if dims is None:
        return None
    if type(dims) is not int or dims < 1:
        raise ConversionError("'dimensions' must be a positive integer")
    return dims


# -- Gemini ----------------------------------------------------------------------------------


def gemini_embed_request(req: dict[str, Any], model: str) -> tuple[bytes, dict[str, Any]]:
    """(method, body): `embedContent` for one string, `batchEmbedContents` for a list."""
    texts = embed_texts(req, "gemini")
    dims = _dimensions(req)

    def one(text: str) -> dict[str, Any]:
        item: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
        if dims is not None:
            item["outputDimensionality"] = dims
        return item

    if isinstance(req.get("input"), str):
        return b"embedContent", one(texts[0])
    return b"batchEmbedContents", {
        "requests": [{"model": f"models/{model}", **one(t)} for t in texts]
    }


def gemini_embed_response(resp: Any) -> tuple[list[list[float]], Usage]:
    """Vectors and usage of an `embedContent` or `batchEmbedContents` answer."""
    if not isinstance(resp, dict):
        raise UpstreamProtocolError("gemini embeddings: the answer is not a JSON object")
    items = resp.get("embeddings")
    if items is None and isinstance(resp.get("embedding"), dict):
        items = [resp["embedding"]]
    if not isinstance(items, list):
        raise UpstreamProtocolError('gemini embeddings: no "embedding" or "embeddings"')
    vectors = [_vector(e.get("values") if isinstance(e, dict) else None) for e in items]
    usage = Usage()
    meta = resp.get("usageMetadata")
    if isinstance(meta, dict):  # Vertex reports it; the Gemini API does not
        usage.prompt_tokens = count(meta.get("promptTokenCount"))
        usage.found = True
    return vectors, usage


# -- Ollama ----------------------------------------------------------------------------------


def ollama_embed_request(req: dict[str, Any], model: str) -> dict[str, Any]:
    """`/api/embed` body."""
    texts = embed_texts(req, "ollama")
    body: dict[str, Any] = {"model": model, "input": texts}
    dims = _dimensions(req)
    if dims is not None:
        body["dimensions"] = dims
    return body


def ollama_embed_response(resp: Any) -> tuple[list[list[float]], Usage]:
    if not isinstance(resp, dict) or not isinstance(resp.get("embeddings"), list):
        raise UpstreamProtocolError('ollama /api/embed: no "embeddings" list')
    vectors = [_vector(v) for v in resp["embeddings"]]
    usage = Usage()
    if "prompt_eval_count" in resp:
        usage.prompt_tokens = count(resp["prompt_eval_count"])
        usage.found = True
    return vectors, usage


# -- Bedrock ---------------------------------------------------------------------------------


def bedrock_embed_kind(model_id: str) -> str:
    """TITAN or COHERE by the model id (an ARN or a regional prefix may precede it)."""
    tail = model_id.rsplit("/", 1)[-1]
    if "titan-embed" in tail:
        return TITAN
    if "cohere.embed" in tail:
        return COHERE
    raise ConversionError(
        f"bedrock embeddings: '{model_id}' is neither a Titan (amazon.titan-embed-*) nor a "
        "Cohere (cohere.embed-*) embedding model"
    )


def bedrock_embed_request(req: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The InvokeModel body for a Titan or Cohere embedding model."""
    kind = bedrock_embed_kind(model_id)
    texts = embed_texts(req, "bedrock")
    dims = _dimensions(req)
    if kind == TITAN:
        if len(texts) != 1:
            raise ConversionError(
                f"Titan embeds one text per request; this request has {len(texts)} "
                "(send them one at a time, or use a Cohere model)"
            )
        body: dict[str, Any] = {"inputText": texts[0]}
        if dims is not None:
            body["dimensions"] = dims
        return body
    input_type = req.get("input_type", "search_document")
    if not isinstance(input_type, str):
        raise ConversionError("'input_type' must be a string")
    body = {"texts": texts, "input_type": input_type}
    if dims is not None:
        body["output_dimension"] = dims
    return body


def bedrock_embed_response(
    resp: Any, model_id: str, header_tokens: int | None
) -> tuple[list[list[float]], Usage]:
    """Vectors and usage of a Titan or Cohere InvokeModel answer; `header_tokens`:
    the `x-amzn-bedrock-input-token-count` response header, if any."""
    if not isinstance(resp, dict):
        raise UpstreamProtocolError("bedrock embeddings: the answer is not a JSON object")
    usage = Usage()
    if bedrock_embed_kind(model_id) == TITAN:
        vectors = [_vector(resp.get("embedding"))]
        if "inputTextTokenCount" in resp:
            header_tokens = count(resp["inputTextTokenCount"])
    else:
        emb = resp.get("embeddings")
        if isinstance(emb, dict):  # embedding_types given: {"float": [[...]]}
            emb = emb.get("float")
        if not isinstance(emb, list):
            raise UpstreamProtocolError('bedrock cohere embeddings: no "embeddings" list')
        vectors = [_vector(v) for v in emb]
    if header_tokens is not None:
        usage.prompt_tokens = header_tokens
        usage.found = True
    return vectors, usage


# -- OpenAI ----------------------------------------------------------------------------------


def _vector(values: Any) -> list[float]:
    if not isinstance(values, list) or not all(
        type(v) in (float, int) and math.isfinite(v) for v in values
    ):
        raise UpstreamProtocolError("an embedding is not a list of numbers")
    return values


def openai_embeddings(
    vectors: list[list[float]], model: str, usage: Usage, encoding_format: Any
) -> dict[str, Any]:
    """OpenAI's embeddings answer (base64: little-endian float32, as OpenAI packs it)."""
    data = []
    for i, vec in enumerate(vectors):
        emb: Any = vec
        if encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": emb})
    n = usage.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }
