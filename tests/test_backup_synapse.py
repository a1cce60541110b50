"""The round trip with real parts: a real Synapse (its SQLite database, media store and
signing key in the data directory, as on the appliance), the real store and the real
bridge, with texts arriving while the backup is taken. After the card is wiped and the
backup restored, the same accounts work, and every text the restored store holds is in its
room exactly once: none lost, none doubled."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from appliance.backup import key
from appliance.backup.create import create
from appliance.backup.layout import Layout
from appliance.backup.restore import restore
from appliance.homeserver.registration import Registration
from appliance.homeserver.synapse import SynapseAdapter, SynapseServer, free_port
from appliance.store import Store
from appliance.store.models import InboundMessage
from tests.plugins.bridge import (
    SERVER_NAME,
    START_TIMEOUT,
    BridgeHomeserver,
    BridgeStack,
    family_config,
)
from tests.plugins.synapse import MatrixUser, create_test_user

ANNA = "+4915112345678"
TOTAL = 100


def text(i: int) -> InboundMessage:
    sent_at = 1_700_000_000_000 + i
    return InboundMessage(line_id="modem", conversation=ANNA, sender=ANNA, body=f"text {i}",
                          sent_at=sent_at, dedup_key=f"backup-{i}")


async def _inbox_bodies(store: Store) -> list[str]:
    rows = await store._db.fetchall("SELECT body FROM inbox ORDER BY id")
    return [str(r[0]) for r in rows]


async def _stack(data: Path, server: SynapseServer, registration: Registration, port: int,
                 owner: MatrixUser, member: MatrixUser) -> BridgeStack:
    hs = BridgeHomeserver(server, registration, port, data / "registration.yaml")
    stack = BridgeStack(hs=hs, tmp=data, config=family_config(hs, owner.mxid, member.mxid),
                        owner=owner, member=member, outsider=member)
    await stack.start()
    await stack.ready()
    return stack


async def _close(stack: BridgeStack) -> None:
    await stack.stop()
    for client in stack.clients:
        await client.close()
    if stack.store is not None:
        await stack.store.close()
    await stack.server.stop()


async def test_backup_while_texts_arrive_then_restore_onto_a_new_card(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    port = free_port()
    registration = Registration.generate(url=f"http://127.0.0.1:{port}")
    registration.save(data / "registration.yaml", SERVER_NAME)
    server = SynapseServer(data / "synapse", server_name=SERVER_NAME,
                           appservice_files=[data / "registration.yaml"])
    await server.start(START_TIMEOUT)
    adapter = SynapseAdapter.for_server(server)
    owner = await create_test_user(adapter, "anna")
    member = await create_test_user(adapter, "ben")
    stack = await _stack(data, server, registration, port, owner, member)
    layout = Layout(data, "synapse")
    key.save(layout.key_file, key.generate())
    out = tmp_path / "stick" / "box.tbbackup"
    try:
        assert stack.store is not None
        store = stack.store

        async def arrive() -> None:
            for i in range(TOTAL):
                await store.inbox.add(text(i))
                await asyncio.sleep(0.05)

        producer = asyncio.create_task(arrive())
        while len(await _inbox_bodies(store)) < 15:
            await asyncio.sleep(0.02)
        made = await asyncio.to_thread(create, layout, key.load(layout.key_file), out)
        in_flight = len(await _inbox_bodies(store))
        await producer
        anna = stack.client(owner)
        room = await stack.portal_room(ANNA)
        await anna.join(room)
        ghost = stack.ghost(ANNA)
        await anna.wait_for(room, lambda e: e["sender"] == ghost and
                            e["content"].get("body") == f"text {TOTAL - 1}", timeout=60)
    finally:
        await _close(stack)
    assert made.databases >= 3
    assert in_flight < TOTAL  # texts were still arriving when the backup was done

    # A new card: nothing of the old data directory is left; the owner has the kit.
    kit = key.kit_text(key.load(layout.key_file))
    shutil.rmtree(data)
    data.mkdir(mode=0o750)
    restore(out, layout, kit)
    server = SynapseServer(data / "synapse", server_name=SERVER_NAME,
                           appservice_files=[data / "registration.yaml"])
    await server.start(START_TIMEOUT)
    stack = await _stack(data, server, registration, port, owner, member)
    try:
        assert stack.store is not None
        expected = await _inbox_bodies(stack.store)
        assert 15 <= len(expected) < TOTAL, len(expected)
        # The same accounts, with the same passwords.
        await SynapseAdapter.for_server(server).login(owner.localpart, owner.password)
        anna = stack.client(owner)
        room = await stack.portal_room(ANNA)
        await anna.join(room)
        ghost = stack.ghost(ANNA)
        deadline = time.monotonic() + 60
        while await stack.store.inbox.pending(limit=1000):
            assert time.monotonic() < deadline, "the restored backlog was never delivered"
            await asyncio.sleep(0.2)
        events = await anna.messages(room, limit=500)
        bodies = [e["content"]["body"] for e in events
                  if e["type"] == "m.room.message" and e["sender"] == ghost]
        assert sorted(bodies) == sorted(set(bodies)), "a text was doubled"
        assert set(bodies) == set(expected), "a text was lost"
    finally:
        await _close(stack)

