"""A real Synapse on loopback for the tests.

Fixtures:
  synapse          -- session scope: one server for the whole run (starting one takes seconds)
  synapse_adapter  -- session scope: the SynapseAdapter for it
  synapse_factory  -- function scope: more servers, e.g. with an appservice registration
                      installed; all are stopped after the test
  make_user        -- function scope: `await make_user("alice")` creates a uniquely named
                      account on the session server and returns (mxid, password, token)

Tests using them are marked `pytest.mark.synapse`. If a marked test fails, the report gets the
tail of the Synapse logs of the servers it used.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from appliance.homeserver.api import random_password
from appliance.homeserver.base import HomeserverAdapter
from appliance.homeserver.synapse import (
    DEFAULT_PYTHON,
    SynapseAdapter,
    SynapseServer,
    SynapseStartError,
)

# A 2-core CI box running other tests in parallel can take long to import Synapse.
START_TIMEOUT = 120.0

_user_counter = itertools.count(1)


class MatrixUser(NamedTuple):
    mxid: str
    password: str
    access_token: str

    @property
    def localpart(self) -> str:
        return self.mxid[1:].split(":", 1)[0]


async def create_test_user(
    adapter: HomeserverAdapter, prefix: str = "user", *, admin: bool = False
) -> MatrixUser:
    """A uniquely named account (unique across the run and across servers sharing state),
    logged in once."""
    localpart = f"{prefix}{os.getpid()}_{next(_user_counter)}".lower()
    password = random_password()
    mxid = await adapter.create_user(localpart, password, admin=admin)
    token = await adapter.login(localpart, password)
    return MatrixUser(mxid, password, token)


def _require_synapse_venv(python: Path) -> None:
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make` to create the Synapse venv", pytrace=False)


def _start(server: SynapseServer) -> None:
    try:
        asyncio.run(server.start(START_TIMEOUT))
    except SynapseStartError as exc:
        pytest.fail(f"Synapse did not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    _require_synapse_venv(DEFAULT_PYTHON)
    server = SynapseServer(tmp_path_factory.mktemp("synapse"))
    _start(server)
    yield server
    asyncio.run(server.stop())


@pytest.fixture(scope="session")
def synapse_adapter(synapse: SynapseServer) -> SynapseAdapter:
    return SynapseAdapter.for_server(synapse)


@pytest.fixture
def make_user(synapse_adapter: SynapseAdapter) -> Any:
    async def make(prefix: str = "user", *, admin: bool = False) -> MatrixUser:
        return await create_test_user(synapse_adapter, prefix, admin=admin)

    return make


class SynapseFactory:
    def __init__(self, base: Path) -> None:
        self._base = base
        self._count = itertools.count(1)
        self.servers: list[SynapseServer] = []

    def create(
        self,
        *,
        server_name: str = "textbridge.test",
        appservice_files: Sequence[Path] = (),
        registration_tokens: bool = False,
        state_dir: Path | None = None,
    ) -> SynapseServer:
        """A server, not started yet (install a registration first, then `await start()`).
        Passing the `state_dir` of an earlier server reuses its database and keys."""
        server = SynapseServer(
            state_dir or self._base / f"synapse{next(self._count)}",
            server_name=server_name,
            appservice_files=appservice_files,
            registration_tokens=registration_tokens,
        )
        self.servers.append(server)
        return server

    async def start(self, **kwargs: Any) -> SynapseServer:
        server = self.create(**kwargs)
        try:
            await server.start(START_TIMEOUT)
        except SynapseStartError as exc:
            pytest.fail(f"Synapse did not start: {exc}", pytrace=False)
        return server

    async def stop_all(self) -> None:
        for server in self.servers:
            await server.stop()


@pytest.fixture
async def synapse_factory(tmp_path: Path) -> AsyncIterator[SynapseFactory]:
    _require_synapse_venv(DEFAULT_PYTHON)
    factory = SynapseFactory(tmp_path)
    yield factory
    await factory.stop_all()


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc: no tools
    needed, and nothing a process could hide by binding late."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc prints the address as host-order 32-bit words.
            words = struct.unpack(f"<{len(raw) // 4}I", raw)
            packed = struct.pack(f">{len(words)}I", *words)
            found.add((socket.inet_ntop(family, packed), int(port_hex, 16)))
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    servers: list[SynapseServer] = []
    if isinstance(funcargs.get("synapse"), SynapseServer):
        servers.append(funcargs["synapse"])
    factory = funcargs.get("synapse_factory")
    if isinstance(factory, SynapseFactory):
        servers.extend(factory.servers)
    for server in servers:
        report.sections.append((f"Synapse log tail ({server.state_dir})", server.log_tail(40)))
