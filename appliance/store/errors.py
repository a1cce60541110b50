"""Errors the store raises. Each message is written to be read by an engineer in a log."""

from __future__ import annotations


class StoreError(Exception):
    """The database cannot be used (wrong schema version, failed pragma, corruption)."""


class StoreStateError(StoreError):
    """A caller asked for a transition the state machine does not allow.

    Raised instead of writing, so that a confused caller can never corrupt a row's history.
    """


class StoreNotFound(StoreStateError):
    """The row a caller named does not exist."""
