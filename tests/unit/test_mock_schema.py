"""The mock's JSON Schema sampler: every value it makes validates (jsonschema is
the oracle), recursive schemas end, and regex patterns are met."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest

from fastgate.providers.mock_schema import pattern_string, sample

SCHEMAS: list[dict[str, Any]] = [
    {"type": ["integer", "null"], "minimum": -5, "maximum": -2},
    {"type": "integer", "multipleOf": 7, "minimum": 10, "maximum": 20},
    {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7},
    {"type": "number", "multipleOf": 0.1, "minimum": 0.25, "maximum": 0.6},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "number", "maximum": -10},
    {"type": "string", "minLength": 12, "maxLength": 14},
    {"type": "string", "pattern": "^(foo|bar)+[0-9]?x$"},
    {"type": "string", "format": "uuid"},
    {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
    {"enum": ["b", "a"]},
    {"const": {"k": [1, 2]}},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "string"}}, "required": ["b"]},
        ],
    },
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "uniqueItems": True},
    {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
    {"type": "object", "minProperties": 2},
    {"type": "object", "properties": {"d": {"type": "string"}}, "required": ["d", "e"]},
    {
        # a tree: recursion must end (children empty deep down)
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    "parent": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
                },
                "required": ["name", "children", "parent"],
                "additionalProperties": False,
            }
        },
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_sample_is_valid(schema: dict[str, Any]) -> None:
    value = sample(schema)
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    checker.validate(value)


def test_draft4_exclusive_booleans() -> None:
    schema = {"type": "integer", "minimum": 5, "exclusiveMinimum": True, "maximum": 6}
    jsonschema.Draft4Validator(schema).validate(sample(schema))


def test_gemini_upper_case_types() -> None:
    value = sample({"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}})
    assert isinstance(value, dict) and isinstance(value["n"], int)


@pytest.mark.parametrize(
    "pattern",
    [
        r"^\d{3}-\d{4}$",
        r"^[A-Z]{3}-\d{2,4}$",
        r"[a-z]+@[a-z]+\.com",
        r"^(?:https?://)?[\w.-]+$",
        r"^[^0-9]{2,}$",
        r"^#[0-9a-fA-F]{6}$",
        r"^\+?[1-9]\d{1,14}$",
        r"(?i)^abc$",
        r"^(?P<year>\d{4})-(0[1-9]|1[0-2])$",
    ],
)
def test_pattern_string_matches(pattern: str) -> None:
    s = pattern_string(pattern)
    assert s is not None and re.search(pattern, s)
