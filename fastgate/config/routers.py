"""[[routers]]: a public model name served by several models.

A router is a file-only entry (the store has no routers): `name`, `models` (the
members, in order) and `strategy` (ROUTER_STRATEGIES, default "ordered": the
list order). The cross-entry rules need every channel and alias parsed first,
so the loader calls `check_routers` after them: a member must be a model some
channel of the file serves (not an alias, not another router), and a router's
name must not be a served model or an alias (a request names one thing).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastgate.config.model import RouterConfig
from fastgate.config.schema import ROUTER_STRATEGIES, Problems, Table, join_key

__all__ = ["check_routers", "parse_router"]


def parse_router(t: Table) -> RouterConfig | None:
    name = t.string("name", required=True, nonempty=True)
    t.str_list("models", required=True, nonempty=True)
    t.string("strategy", choices=ROUTER_STRATEGIES)
    t.finish()
    if name is None or "models" not in t.kw:
        return None
    return RouterConfig(**t.kw)


def check_routers(
    probs: Problems,
    routers: list[tuple[str, RouterConfig]],
    served: set[str],
    aliases: Mapping[str, str],
) -> None:
    """`routers`: (key path of the entry, router). Names every problem."""
    first: dict[str, str] = {}
    names: set[str] = set()  # routers whose name is their own
    for path, r in routers:
        where = join_key(path, "name")
        if r.name in first:
            probs.add(where, f'duplicate router name "{r.name}" (first at {first[r.name]})')
            continue
        first[r.name] = where
        if r.name in served:
            probs.add(where, f'"{r.name}" is a model a channel serves; a router needs its own name')
        elif r.name in aliases:
            probs.add(where, f'"{r.name}" is already an alias in [aliases]')
        else:
            names.add(r.name)
    for path, r in routers:
        for i, model in enumerate(r.models):
            where = f"{join_key(path, 'models')}[{i}]"
            if model in names:
                probs.add(where, f'"{model}" is a router; routers cannot nest')
            elif model in aliases and model not in served:
                probs.add(where, f'"{model}" is an alias; name the model ("{aliases[model]}")')
            elif model not in served:
                probs.add(where, f'unknown model "{model}": no channel serves it')
