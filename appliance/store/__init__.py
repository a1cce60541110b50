"""The durable message store: inbox, outbox and multipart fragments in one SQLite file."""

from appliance.store.errors import StoreError, StoreNotFound, StoreStateError
from appliance.store.notify import Notifier
from appliance.store.outbox import INTERRUPTED_ERROR
from appliance.store.store import Store

__all__ = [
    "INTERRUPTED_ERROR",
    "Notifier",
    "Store",
    "StoreError",
    "StoreNotFound",
    "StoreStateError",
]
