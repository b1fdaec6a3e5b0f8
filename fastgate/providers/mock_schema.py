"""A JSON value that satisfies a JSON Schema: the mock's tool arguments and
structured outputs.

Deterministic, no randomness: `const`; `enum` (the first value); `anyOf` /
`oneOf` (the first choice; a `null` choice when nesting gets deep); `allOf`
(merged); `$ref` to `#/$defs/...` or `#/definitions/...` (any JSON pointer into
the root); objects with every listed property (only the `required` ones deeper
than three levels, so recursive schemas end; the n-th item of an array gets
its n-th variant: next enum value, next number, "example 2") and `minProperties`; arrays of
`minItems` items (at least one near the top; `prefixItems` and tuple `items`
first, items told apart for `uniqueItems`); strings by `format`, by `pattern` (a
small generator for the usual regex syntax), by the property's name ("city" ->
"Paris") and cut or padded to `maxLength` / `minLength`; numbers and integers
inside `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum` (numbers or
draft-4 booleans) on a `multipleOf`; booleans; null. Types are read
case-insensitively (Gemini writes "OBJECT").
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["pattern_string", "sample"]

_MAX_DEPTH = 24
_FULL_DEPTH = 3  # below this, optional properties and non-empty arrays are generated

_FORMATS = {
    "date-time": "2024-05-01T12:00:00Z",
    "date": "2024-05-01",
    "time": "12:00:00Z",
    "duration": "PT1H",
    "email": "ada@example.com",
    "idn-email": "ada@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "regex": ".*",
    "json-pointer": "/example",
}

# A string property's value by a word in its name (first match wins).
_BY_NAME = (
    ("email", "ada@example.com"),
    ("url", "https://example.com/"),
    ("city", "Paris"),
    ("location", "Paris"),
    ("country", "France"),
    ("address", "1 Example Street, Paris"),
    ("unit", "celsius"),
    ("language", "English"),
    ("currency", "EUR"),
    ("color", "blue"),
    ("title", "An example title"),
    ("name", "Ada Lovelace"),
    ("query", "example query"),
    ("date", "2024-05-01"),
    ("id", "id-1"),
    ("description", "An example description."),
    ("summary", "An example summary."),
    ("reason", "An example reason."),
    ("answer", "An example answer."),
    ("text", "Example text."),
)


def sample(schema: Any, root: Any = None) -> Any:
    """A value valid against `schema` ($refs resolved in `root`, default the schema)."""
    return _Sampler(schema if root is None else root).value(schema, 0, 0, "")


class _Sampler:
    __slots__ = ("root",)

    def __init__(self, root: Any) -> None:
        self.root = root

    # -- schema plumbing ----------------------------------------------------------------

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node = self.root
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def resolve(self, schema: Any) -> Any:
        for _ in range(32):
            if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
                return schema
            target = self.pointer(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = _merge(target, rest) if isinstance(target, dict) else target
        return {}

    def flatten(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """`allOf` merged in, the chosen `anyOf`/`oneOf` branch merged in."""
        for _ in range(16):
            if "allOf" in schema and isinstance(schema["allOf"], list):
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for sub in schema["allOf"]:
                    sub = self.resolve(sub)
                    if isinstance(sub, dict):
                        merged = _merge(merged, sub)
                schema = merged
                continue
            key = "anyOf" if isinstance(schema.get("anyOf"), list) else "oneOf"
            options = schema.get(key)
            if isinstance(options, list) and options:
                pick = options[0]
                if depth >= _FULL_DEPTH:  # deep: end recursion with a null where allowed
                    pick = next((o for o in options if _is_null(self.resolve(o))), pick)
                rest = {k: v for k, v in schema.items() if k != key}
                pick = self.resolve(pick)
                schema = _merge(rest, pick) if isinstance(pick, dict) else rest
                continue
            return schema
        return schema

    # -- values ---------------------------------------------------------------------------

    def value(self, schema: Any, depth: int, variant: int, name: str) -> Any:
        schema = self.resolve(schema)
        if schema is True or schema is None:
            schema = {}
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return None
        schema = self.flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[variant % len(enum)]
        kind = _type_of(schema, depth)
        if kind == "object":
            return self.obj(schema, depth, variant)
        if kind == "array":
            return self.array(schema, depth, name)
        if kind == "integer":
            return _integer(schema, variant)
        if kind == "number":
            return _number(schema, variant)
        if kind == "boolean":
            return variant % 2 == 0
        if kind == "null":
            return None
        return _string(schema, variant, name)

    def obj(self, schema: dict[str, Any], depth: int, variant: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        required = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        extra = schema.get("additionalProperties")
        extra_schema = extra if isinstance(extra, dict) else {}
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if key in required or depth < _FULL_DEPTH:
                out[key] = self.value(sub, depth + 1, variant, key)
        for key in required:
            if key not in out:
                out[key] = self.value(extra_schema, depth + 1, 0, key)
        least = schema.get("minProperties")
        if isinstance(least, int) and extra is not False:
            i = 1
            while len(out) < least:
                key = f"key{i}"
                if key not in out:
                    out[key] = self.value(extra_schema, depth + 1, 0, key)
                i += 1
        return out

    def array(self, schema: dict[str, Any], depth: int, name: str) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft 4-2019 tuple form
            prefix, items = items, schema.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = items if isinstance(items, dict) else {}
        least = schema.get("minItems")
        least = least if isinstance(least, int) and least > 0 else 0
        count = max(least, len(prefix) if depth < _FULL_DEPTH else 0)
        if depth < _FULL_DEPTH:
            count = max(count, 1)
        most = schema.get("maxItems")
        if isinstance(most, int) and most >= 0:
            count = min(count, most)
        if schema.get("items") is False and not prefix:
            count = 0
        singular = name[:-1] if name.endswith("s") else name
        return [
            self.value(prefix[i] if i < len(prefix) else items, depth + 1, i, singular)
            for i in range(count)
        ]


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    if isinstance(a.get("properties"), dict) and isinstance(b.get("properties"), dict):
        out["properties"] = {**a["properties"], **b["properties"]}
    if isinstance(a.get("required"), list) and isinstance(b.get("required"), list):
        out["required"] = list(dict.fromkeys([*a["required"], *b["required"]]))
    return out


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and str(schema.get("type", "")).lower() == "null"


def _type_of(schema: dict[str, Any], depth: int) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        names = [str(x).lower() for x in t]
        t = next((x for x in names if x != "null"), "null")
    if isinstance(t, str):
        return t.lower()
    keys = schema.keys()
    if keys & {"properties", "required", "additionalProperties", "minProperties"}:
        return "object"
    if keys & {"items", "prefixItems", "minItems", "maxItems"}:
        return "array"
    if keys & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
        return "number"
    if keys & {"minLength", "maxLength", "pattern", "format"}:
        return "string"
    return "object" if depth == 0 else "string"


# -- numbers ------------------------------------------------------------------------------


def _bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low exclusive, high, high exclusive) in either draft's spelling."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    lo = lo if _num(lo) else None
    hi = hi if _num(hi) else None
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    lo_x = hi_x = False
    if xlo is True and lo is not None:
        lo_x = True
    elif _num(xlo) and (lo is None or xlo >= lo):
        lo, lo_x = xlo, True
    if xhi is True and hi is not None:
        hi_x = True
    elif _num(xhi) and (hi is None or xhi <= hi):
        hi, hi_x = xhi, True
    return lo, lo_x, hi, hi_x


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(schema: dict[str, Any], variant: int) -> int:
    lo, lo_x, hi, hi_x = _bounds(schema)
    low = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
    high = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
    v = 1 + variant
    if low is not None and v < low:
        v = low + variant
    if high is not None and v > high:
        v = high
    if low is not None and v < low:
        v = low
    step = schema.get("multipleOf")
    if _num(step) and step > 0:
        if step == int(step):
            step = int(step)
            v = math.ceil(v / step) * step
            if high is not None and v > high:
                v = math.floor(high / step) * step
        else:
            v = _multiple(step, low, high, variant, integer=True) or v
    return int(v)


def _number(schema: dict[str, Any], variant: int) -> float | int:
    lo, lo_x, hi, hi_x = _bounds(schema)
    step = schema.get("multipleOf")
    if _num(step) and step > 0:
        found = _multiple(step, lo, hi, variant, lo_x=lo_x, hi_x=hi_x)
        if found is not None:
            return found
    v = 1.5 + variant

    def ok(x: float) -> bool:
        if lo is not None and (x <= lo if lo_x else x < lo):
            return False
        return not (hi is not None and (x >= hi if hi_x else x > hi))

    if ok(v):
        return v
    if lo is not None and hi is not None:
        mid = (lo + hi) / 2
        return mid if ok(mid) else lo
    if lo is not None:
        return lo + 1 + variant if lo_x else lo + variant
    return hi - 1 - variant if hi_x else hi - variant  # type: ignore[operator]


def _multiple(
    step: float,
    lo: float | None,
    hi: float | None,
    variant: int,
    *,
    lo_x: bool = False,
    hi_x: bool = False,
    integer: bool = False,
) -> Any:
    """k * step inside the bounds, with k / step exact in floating point."""
    first = 1 if lo is None else math.ceil(lo / step)
    for k in range(first + variant, first + variant + 64):
        v = k * step
        if isinstance(step, float) and v / step != k:
            continue
        if integer and v != int(v):
            continue
        if lo is not None and (v <= lo if lo_x else v < lo):
            continue
        if hi is not None and (v >= hi if hi_x else v > hi):
            return None
        return int(v) if integer else v
    return None


# -- strings ------------------------------------------------------------------------------


def _string(schema: dict[str, Any], variant: int, name: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        s = _FORMATS[fmt]
    else:
        low = name.lower()
        s = next((v for k, v in _BY_NAME if k in low), "example")
    if variant:
        if _DATE.match(s):  # the n-th day
            s = s[:8] + f"{1 + variant % 28:02d}" + s[10:]
        elif " " in s or s.isalpha():  # free text; formatted values stay as they are
            s = f"{s} {variant + 1}"
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not _matches(pattern, s):
        made = pattern_string(pattern)
        if made is not None:
            s = made
    least, most = schema.get("minLength"), schema.get("maxLength")
    if isinstance(least, int) and len(s) < least:
        s += "x" * (least - len(s))
    if isinstance(most, int) and most >= 0 and len(s) > most:
        s = s[:most]
    return s


def _matches(pattern: str, s: str) -> bool:
    try:
        return re.search(pattern, s) is not None
    except re.error:
        return True  # not a Python regex: nothing to check against


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLASS = {"d": "1", "w": "a", "s": " ", "D": "a", "W": "-", "S": "a"}


def pattern_string(pattern: str) -> str | None:
    """A string the regex `pattern` matches (usual syntax), or None."""
    try:
        out, pos = _alternatives(pattern, 0)
    except (IndexError, ValueError):
        return None
    if pos != len(pattern):
        return None
    return out if _matches(pattern, out) else None


def _alternatives(p: str, i: int) -> tuple[str, int]:
    """The first alternative of a (sub)pattern; skips the others."""
    first, i = _sequence(p, i)
    while i < len(p) and p[i] == "|":
        _, i = _sequence(p, i + 1)
    return first, i


def _sequence(p: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    while i < len(p) and p[i] not in "|)":
        atom, i = _atom(p, i)
        lo, i = _quantifier(p, i)
        out.append(atom * lo)
    return "".join(out), i


def _atom(p: str, i: int) -> tuple[str, int]:
    c = p[i]
    if c in "^$":
        return "", i + 1
    if c == ".":
        return "a", i + 1
    if c == "\\":
        e = p[i + 1]
        if e in "bBAzZ":
            return "", i + 2
        return _CLASS.get(e, e), i + 2
    if c == "[":
        return _char_class(p, i)
    if c == "(":
        i += 1
        flags = re.match(r"\?[aiLmsux-]+\)", p[i:])
        if flags:  # inline flags such as (?i)
            return "", i + flags.end()
        if p.startswith("?:", i):
            i += 2
        elif p.startswith(("?=", "?!", "?<=", "?<!"), i):
            depth = 1
            while depth:
                i += 1
                depth += {"(": 1, ")": -1}.get(p[i], 0)
            return "", i + 1
        elif p.startswith("?P<", i) or p.startswith("?<", i):
            i = p.index(">", i) + 1
        inner, i = _alternatives(p, i)
        if p[i] != ")":
            raise ValueError
        return inner, i + 1
    if c in "*+?{":
        raise ValueError
    return c, i + 1


def _char_class(p: str, i: int) -> tuple[str, int]:
    i += 1
    negate = p[i] == "^"
    if negate:
        i += 1
    members: list[str] = []
    first = True
    while first or p[i] != "]":
        first = False
        c = p[i]
        if c == "\\":
            c = _CLASS.get(p[i + 1], p[i + 1])
            i += 2
        else:
            i += 1
        if p[i] == "-" and p[i + 1] != "]":
            end = p[i + 1]
            if end == "\\":
                end = p[i + 2]
                i += 1
            i += 2
            members.extend(chr(x) for x in range(ord(c), min(ord(end), ord(c) + 200) + 1))
        else:
            members.append(c)
    i += 1
    if negate:
        pick = next((ch for ch in "aA1-_x " if ch not in members), None)
        if pick is None:
            raise ValueError
        return pick, i
    preferred = next((ch for ch in members if ch.isalnum()), members[0] if members else None)
    if preferred is None:
        raise ValueError
    return preferred, i


def _quantifier(p: str, i: int) -> tuple[int, int]:
    if i >= len(p):
        return 1, i
    c = p[i]
    if c in "*?":
        lo, i = 0, i + 1
    elif c == "+":
        lo, i = 1, i + 1
    elif c == "{" and re.match(r"\{\d+(,\d*)?\}", p[i:]):
        m = re.match(r"\{(\d+)(,\d*)?\}", p[i:])
        assert m is not None
        lo, i = int(m.group(1)), i + m.end()
    else:
        return 1, i
    if i < len(p) and p[i] in "?+":  # lazy / possessive
        i += 1
    return lo, i
