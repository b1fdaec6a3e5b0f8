"""Store state and the merge rule (file entries vs store entries).

The TOML file's entries are read-only; store entries are managed (CRUD). The
running config is the file's entries plus the store's; on a name clash
(channel name, token name or key, price model, group name) the FILE entry wins
and the store entry is ignored with a warning. The admin API and CLI should
refuse to create a store entry whose name the file already uses.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastgate.config import ChannelConfig, Config, GroupConfig, PriceConfig, TokenConfig

__all__ = ["StoreState", "merge"]

log = logging.getLogger("fastgate.store")


@dataclass(slots=True)
class StoreState:
    """What `Store.load()` returns: store entries as config dataclasses.

    `problems` names entries that could not be used as stored (for example a
    channel whose credentials cannot be decrypted: it is loaded disabled).
    """

    version: int
    channels: list[ChannelConfig] = field(default_factory=list)
    tokens: list[TokenConfig] = field(default_factory=list)
    prices: list[PriceConfig] = field(default_factory=list)
    groups: list[GroupConfig] = field(default_factory=list)
    quota_used: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def merge(config: Config, state: StoreState, *, warnings: list[str] | None = None) -> Config:
    """The running config: the file's entries plus the store's (file wins on a clash).

    Clashes: same channel name, same token name or same key hash, same price
    model, same group name. Each ignored store entry produces one message; with
    `warnings` given the messages are appended there (callers that refresh often
    can de-duplicate), otherwise they are logged.
    """
    msgs: list[str] = []

    def pick(file_entries: Sequence[Any], store_entries: Sequence[Any], attr: str, what: str):
        taken = {getattr(e, attr) for e in file_entries}
        out = list(file_entries)
        for e in store_entries:
            name = getattr(e, attr)
            if name in taken:
                msgs.append(
                    f'store {what} "{name}" ignored: the config file defines one with '
                    "the same name (file entries win and are read-only)"
                )
                continue
            taken.add(name)
            out.append(e)
        return tuple(out)

    channels = pick(config.channels, state.channels, "name", "channel")
    tokens_by_name = pick(config.tokens, state.tokens, "name", "token")
    shas: set[str] = set()
    tokens = []
    for t in tokens_by_name:
        if t.sha256 in shas:
            msgs.append(f'store token "{t.name}" ignored: its key is already used by another token')
            continue
        shas.add(t.sha256)
        tokens.append(t)
    prices = pick(config.prices, state.prices, "model", "price")
    groups = pick(config.groups, state.groups, "name", "group")
    if warnings is not None:
        warnings.extend(msgs)
    else:
        for m in msgs:
            log.warning("%s", m)
    return dataclasses.replace(
        config, channels=channels, tokens=tuple(tokens), prices=prices, groups=groups
    )
