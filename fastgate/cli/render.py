"""The one place CLI output is formatted: tables, key/value lines, JSON, value text.

Commands never format a table themselves. A kind of row is described once as a
tuple of `Column`s (see `fastgate.cli.views`); `Out` turns a list of rows into an
aligned table or, with `--json`, into one JSON document. Keeping the rendering
generic is what keeps `token list`, `channel list`, `price list`, `usage` and
`channel models` aligned, quoted and JSON-encoded the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: its header, how a row's cell is computed, its alignment."""

    header: str
    cell: Callable[[Row], Any]
    right: bool = False


@dataclass(frozen=True, slots=True)
class View:
    """How the entries of one control-plane kind are printed.

    `columns` make the `list` table. `show` prints one entry as key/value lines,
    or, with `show_as_row`, as a one-row table of the same columns (prices: a
    price is its row).
    """

    kind: str
    columns: tuple[Column, ...]
    show_as_row: bool = False
    summary: Callable[[Row], str] | None = None  # a last line under `show`


class Out:
    """Where a command writes: human text (tables, lines), or one JSON document."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def doc(self, obj: Any) -> None:
        import orjson

        sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")

    def line(self, text: str = "") -> None:
        print(text)

    def result(self, obj: Any, text: str) -> None:
        """An action's outcome: the entry as JSON, or one human line."""
        if self.json:
            self.doc(obj)
        else:
            self.line(text)

    def listing(self, view: View, rows: Sequence[Row]) -> None:
        """`<kind> list`: the entries as JSON, or as the view's table."""
        if self.json:
            self.doc(rows)
        else:
            table(view.columns, rows)

    def entry(self, view: View, entry: Row) -> None:
        """`<kind> show`: one entry as JSON, or as the view's show form."""
        if self.json:
            self.doc(entry)
        elif view.show_as_row:
            table(view.columns, [entry], align=False)
        else:
            pairs(entry)
            if view.summary is not None:
                print(view.summary(entry))


def table(columns: Sequence[Column], rows: Iterable[Row], *, align: bool = True) -> None:
    """Aligned columns, two spaces apart; `right` columns are right-aligned when
    `align` (a single shown row is left-aligned throughout)."""
    cells = [[c.header for c in columns]] + [
        ["" if v is None else str(v) for v in (c.cell(r) for c in columns)] for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    right = {i for i, c in enumerate(columns) if align and c.right}
    for r in cells:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        print("  ".join(parts).rstrip())


_FIRST = ("id", "name", "model", "source", "read_only", "shadowed")


def pairs(entry: Row) -> None:
    """One entry as "key  value" lines: identity first, times as RFC 3339."""
    keys = [k for k in _FIRST if k in entry] + [k for k in entry if k not in _FIRST]
    width = max((len(k) for k in keys), default=0)
    for k in keys:
        v = entry[k]
        if k in ("created_at", "updated_at") and isinstance(v, int | float):
            v = rfc3339(v)
        print(f"{k.ljust(width)}  {show(v)}")


def warn(text: str) -> None:
    """A message for the user on stderr, prefixed "fastgate: "."""
    print(f"fastgate: {text}", file=sys.stderr)


# --------------------------------------------------------------------------- value text


def show(v: Any) -> str:
    """A value as table/show text: "-" for nothing, yes/no, lists comma separated."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ",".join(show(x) for x in v) if v else "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={show(x)}" for k, x in v.items()) if v else "-"
    if isinstance(v, float):
        return dec(v)
    return str(v)


def rfc3339(ts: float) -> str:
    """Unix seconds as UTC RFC 3339 text, whole seconds."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dec(x: float | None) -> str:
    """A float as plain decimal text (2.5, 0.00015), no exponent."""
    from decimal import Decimal  # here: `fastgate serve` imports this module, not decimal

    if x is None:
        return "-"
    d = Decimal(repr(float(x)))
    text = format(d.normalize(), "f")
    return text if text not in ("-0",) else "0"


def usd(micros: int) -> str:
    """Integer micro-dollars as USD text, exact (1234567 -> 1.234567)."""
    sign = "-" if micros < 0 else ""
    m = abs(int(micros))
    whole, frac = divmod(m, 1_000_000)
    text = f"{frac:06d}".rstrip("0")
    return f"{sign}{whole}.{text.ljust(2, '0')}"
