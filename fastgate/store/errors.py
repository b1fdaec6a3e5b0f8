"""The store's errors: what a caller reports (admin API status, CLI message).

Kept apart so that every store module, and the bridge, can raise them without
importing the rest of the store.
"""

from __future__ import annotations

from fastgate.store.secrets import SecretKeyInvalid, SecretKeyMissing

__all__ = [
    "Conflict",
    "InvalidEntry",
    "NotFound",
    "SecretKeyInvalid",
    "SecretKeyMissing",
    "StoreError",
]


class StoreError(Exception):
    """A store operation failed in a way the caller should report (not a bug)."""


class NotFound(StoreError):
    """No entry with that id or name (admin API: 404)."""


class Conflict(StoreError):
    """The name (or token key) is already taken (admin API: 409)."""


class InvalidEntry(StoreError):
    """The entry breaks a config rule; `problems` lists "kind.key: message" (admin API: 400)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))
