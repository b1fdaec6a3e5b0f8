"""The embeddings converters (fastgate/convert/embeddings.py): the shapes the
functional tests do not reach (Vertex usage, Cohere by-type answers, ARNs, bad
answers) and base64 packing checked against an independent decoder."""

from __future__ import annotations

import base64
import struct

import pytest

from fastgate.convert.embeddings import (
    COHERE,
    TITAN,
    bedrock_embed_kind,
    bedrock_embed_request,
    bedrock_embed_response,
    embed_texts,
    gemini_embed_request,
    gemini_embed_response,
    ollama_embed_request,
    openai_embeddings,
)
from fastgate.convert.errors import ConversionError, UpstreamProtocolError
from fastgate.vocab.usage import Usage


def test_inputs_and_formats() -> None:
    assert embed_texts({"input": "a"}, "x") == ["a"]
    assert embed_texts({"input": ["a", "b"], "encoding_format": "base64"}, "x") == ["a", "b"]
    for bad in ({"input": []}, {"input": None}, {"input": [1, 2]}, {"input": [[1]]}):
        with pytest.raises(ConversionError):
            embed_texts(bad, "x")
    with pytest.raises(ConversionError, match="encoding_format"):
        embed_texts({"input": "a", "encoding_format": "int8"}, "x")
    with pytest.raises(ConversionError, match="dimensions"):
        ollama_embed_request({"input": "a", "dimensions": 0}, "m")


def test_gemini_requests_and_vertex_usage() -> None:
    method, body = gemini_embed_request({"input": ["a", "b"], "dimensions": 3}, "m")
    assert method == b"batchEmbedContents"
    assert body["requests"][1] == {
        "model": "models/m",
        "content": {"parts": [{"text": "b"}]},
        "outputDimensionality": 3,
    }
    vecs, usage = gemini_embed_response({"embedding": {"values": [0.5, 1]}})
    assert vecs == [[0.5, 1]] and not usage.found  # the Gemini API reports no tokens
    vecs, usage = gemini_embed_response(
        {"embeddings": [{"values": [1.0]}], "usageMetadata": {"promptTokenCount": 7}}
    )
    assert (usage.prompt_tokens, usage.found) == (7, True)
    for bad in ({}, {"embeddings": [{"values": ["x"]}]}, {"embedding": {"values": [float("nan")]}}):
        with pytest.raises(UpstreamProtocolError):
            gemini_embed_response(bad)


def test_bedrock_kinds_bodies_and_answers() -> None:
    assert bedrock_embed_kind("amazon.titan-embed-text-v2:0") == TITAN
    arn = "arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-multilingual-v3"
    assert bedrock_embed_kind(arn) == COHERE
    with pytest.raises(ConversionError, match="neither a Titan"):
        bedrock_embed_kind("anthropic.claude-3-haiku")
    body = bedrock_embed_request({"input": ["q"], "input_type": "search_query"}, arn)
    assert body == {"texts": ["q"], "input_type": "search_query"}
    body = bedrock_embed_request({"input": "t", "dimensions": 256}, "amazon.titan-embed-text-v2:0")
    assert body == {"inputText": "t", "dimensions": 256}
    by_type = {"embeddings": {"float": [[1.0, 2.0]]}, "response_type": "embeddings_by_type"}
    vecs, usage = bedrock_embed_response(by_type, arn, 5)
    assert vecs == [[1.0, 2.0]] and (usage.prompt_tokens, usage.found) == (5, True)
    vecs, usage = bedrock_embed_response(
        {"embedding": [0.25], "inputTextTokenCount": 3}, "amazon.titan-embed-text-v1", None
    )
    assert vecs == [[0.25]] and usage.prompt_tokens == 3
    _, usage = bedrock_embed_response({"embeddings": [[1.0]]}, arn, None)
    assert not usage.found


def test_base64_is_little_endian_float32() -> None:
    vec = [0.5, -1.25, 3.0]
    out = openai_embeddings([vec], "m", Usage(prompt_tokens=4, found=True), "base64")
    raw = base64.b64decode(out["data"][0]["embedding"])
    assert list(struct.unpack("<3f", raw)) == vec
    assert out["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert openai_embeddings([vec], "m", Usage(), None)["data"][0]["embedding"] == vec
