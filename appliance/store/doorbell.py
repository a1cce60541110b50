"""The store's doorbell: a commit in one process wakes the lines of another at once.

The process that runs the lines listens on a unix datagram socket beside the database
({db}-wake); every other process that opens the same store rings it after each commit, one
byte, without waiting and without caring whether anyone listens. A queued text made by the
CLI or a test process is thus seen in about a millisecond, while an idle appliance does no
polling at all. The socket carries no data: a ring only says "look at the store again", so a
lost or spurious ring costs one query and nothing else, and the file mode keeps strangers out.

Unix socket paths are limited to 108 bytes, so both sides address the socket through an open
descriptor of the database's directory (/proc/self/fd/N/name), whatever the directory's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = "-wake"


class Doorbell:
    """`on_ring` hears every ring while this process listens, beside the subscribers (the
    store's change notifier, so its waiters need not poll for other processes' commits)."""

    def __init__(self, db_path: Path, on_ring: Callable[[], None] | None = None) -> None:
        self._on_ring_always = on_ring
        self.name = db_path.name + SUFFIX
        self._dir_fd = os.open(db_path.parent, os.O_PATH | os.O_DIRECTORY)
        self._address = f"/proc/self/fd/{self._dir_fd}/{self.name}"
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def ring(self) -> None:
        """Tell the listening process that something was committed; never blocks, never
        fails (nobody listening, or its queue full, means nobody needs the ring)."""
        if self._listener is not None or self._dir_fd < 0:
            return  # the listener's own commits wake its lines directly
        try:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            self._sender.sendto(b"\0", self._address)
        except OSError:
            pass

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` on every ring from another process. The first subscriber makes
        this process the listener, unless another live process already is."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        if self._listener is None:
            self._listen()

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)
        if not self._callbacks:
            self._stop_listening()

    def _listen(self) -> None:
        if self._dir_fd < 0:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            try:
                sock.bind(self._address)
            except OSError:
                if not self._stale():
                    raise
                os.unlink(self.name, dir_fd=self._dir_fd)
                sock.bind(self._address)
            st = os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
            self._inode = st.st_ino
            # Owner and group, like the database: the web service and the CLI may ring.
            os.chmod(self.name, 0o660, dir_fd=self._dir_fd)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_ring)
        except OSError as exc:
            # Another process listens (or the directory refuses the socket): its lines are
            # the ones to wake, and this process rings like any other.
            log.debug("store doorbell not listening: %s", exc)
            sock.close()
            return
        self._listener = sock

    def _stale(self) -> bool:
        """True if the socket file is left from a process that is gone."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(self._address)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        finally:
            probe.close()
        return False

    def _on_ring(self) -> None:
        sock = self._listener
        if sock is None:
            return
        with contextlib.suppress(OSError):
            while sock.recv(64):
                pass
        callbacks = list(self._callbacks)
        if self._on_ring_always is not None:
            callbacks.append(self._on_ring_always)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("store doorbell callback failed")

    def _stop_listening(self) -> None:
        sock, self._listener = self._listener, None
        if sock is None:
            return
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            st = os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
            if st.st_ino == self._inode:  # not a newer listener's socket
                os.unlink(self.name, dir_fd=self._dir_fd)
        self._inode = None

    def close(self) -> None:
        self._callbacks.clear()
        self._stop_listening()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
