"""The one error of the backup package: its message is shown to a person as it is."""

from __future__ import annotations


class BackupError(ValueError):
    """A backup could not be made, read or restored; the text says why and what to do."""
