"""Failures of the appliance itself reach the owners in their chat: the web service tells the
bridge over the control socket (`POST /v1/notices`), the bridge posts a notice in each
owner's management room, once per key. Real Synapse, real bridge, real control socket; for
the certificate, a real ACME server (pebble) whose validation fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.control import make_control_app, serve_control
from appliance.control_client import ControlClient, ControlError
from appliance.web.tls import Certificates
from tests.plugins.acme import Pebble, needs_pebble
from tests.plugins.bridge import BridgeStack, notices

pytestmark = pytest.mark.synapse


async def _served(stack: BridgeStack, tmp_path: Path) -> tuple[ControlClient, object]:
    assert stack.bridge is not None and stack.store is not None
    app = make_control_app(lines={}, store=stack.store, sim_control=None,
                           notify_owners=stack.bridge.notify_owners)
    socket_path = tmp_path / "control.sock"
    runner = await serve_control(app, socket_path)
    return ControlClient(socket_path), runner


async def test_owner_notices_once_per_key_and_only_to_owners(
    bridge_stack: BridgeStack, tmp_path: Path
) -> None:
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    client, runner = await _served(stack, tmp_path)
    try:
        anna, ben = stack.client(stack.owner), stack.client(stack.member)
        anna_room = await stack.management_room(stack.owner)
        ben_room = await stack.management_room(stack.member)
        await anna.join(anna_room)
        await ben.join(ben_room)
        text = "The certificate for family.example could not be renewed: <b>port 80</b>."
        assert await client.notice("certificate", "failed:2026-12-01", text)
        # The daily check repeating the same failure says nothing new.
        assert not await client.notice("certificate", "failed:2026-12-01", text)
        assert await client.notice("certificate", "ok:2027-03-01", "Renewed.", "info")
        await anna.wait_for(anna_room, lambda e: notices(stack.bot)(e)
                            and "Renewed." in e["content"]["body"])
        said = [e for e in await anna.messages(anna_room) if notices(stack.bot)(e)]
        failed = [e for e in said if "could not be renewed" in e["content"]["body"]]
        assert len(failed) == 1
        # Plain text: the angle brackets are text, nothing became HTML.
        assert "<b>port 80</b>" in failed[0]["content"]["body"]
        assert "formatted_body" not in failed[0]["content"]
        # The member who owns no line hears nothing of the appliance's certificate.
        assert not [e for e in await ben.messages(ben_room)
                    if notices(stack.bot)(e) and "certificate" in e["content"]["body"]]
        for bad in (
            {"topic": "Bad Topic", "key": "k", "text": "x"},
            {"topic": "certificate", "key": "k k", "text": "x"},
            {"topic": "certificate", "key": "k", "text": ""},
            {"topic": "certificate", "key": "k", "text": "bell\x07"},
            {"topic": "certificate", "key": "k", "text": "x" * 2001},
            {"topic": "certificate", "key": "k", "text": "x", "severity": "panic"},
        ):
            with pytest.raises(ControlError) as err:
                await client._call("POST", "/v1/notices", bad)
            assert err.value.status == 400, bad
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


@needs_pebble
async def test_a_failed_certificate_order_is_told_in_the_owners_chat(
    bridge_stack: BridgeStack, pebble: Pebble, tmp_path: Path
) -> None:
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    client, runner = await _served(stack, tmp_path)
    try:
        from appliance.web.ca import CertificateAuthority

        anna = stack.client(stack.owner)
        room = await stack.management_room(stack.owner)
        await anna.join(room)
        # Nothing answers pebble's check on "port 80" (no web app listens there).
        tls = Certificates(
            tmp_path / "web",
            lambda: CertificateAuthority(tmp_path / "web" / "ca", "textbridge.local"),
            hostnames=("textbridge.local",), ips=(), directory_url=pebble.directory,
            ca_bundle=pebble.ca_file, poll_interval=0.1,
            notify=lambda topic, key, text, severity: client.notice(topic, key, text, severity),
        )
        assert tls.start("family.textbridge.test")
        await asyncio.wait_for(tls.wait(), 60)
        assert tls.status().state == "error"
        # No certificate yet: "obtained" (a renewal that fails says "renewed").
        await anna.wait_for(room, lambda e: notices(stack.bot)(e) and "could not be obtained"
                            in e["content"]["body"])
        body = next(e["content"]["body"] for e in await anna.messages(room)
                    if notices(stack.bot)(e) and "could not be obtained" in e["content"]["body"])
        assert "family.textbridge.test" in body and "port 80" in body
        assert "textbridge.local" in body  # what still works meanwhile
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


@pytest.mark.netns
async def test_remote_access_that_cannot_be_set_up_is_told_in_the_owners_chat(
    bridge_stack: BridgeStack, tmp_path: Path
) -> None:
    """`textbridge wireguard apply` (what the path unit runs after the owner added a phone)
    fails in a network namespace with no WireGuard in it: the owners read why in their chat,
    once, however often it is re-run."""
    import os
    import subprocess
    import sys
    import uuid

    from appliance.wireguard import tunnel

    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    if Path("/sys/module/wireguard").exists():
        pytest.skip("this kernel has WireGuard: applying would work, nothing to tell")
    stack = bridge_stack
    await stack.start()
    await stack.ready()
    _, runner = await _served(stack, tmp_path)
    ns = f"tb-notice-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        anna = stack.client(stack.owner)
        room = await stack.management_room(stack.owner)
        await anna.join(room)
        state_dir = tmp_path / "web"
        state_dir.mkdir()
        state, _ = tunnel.Tunnel(enabled=True, endpoint_host="home.example.org").with_subnet(
        ).add_device("Anna's phone", "anna")
        tunnel.save(state_dir / "wireguard.json", state)
        cmd = [sys.executable, "-m", "appliance", "wireguard", "apply",
               "--state-dir", str(state_dir), "--netns", ns,
               "--socket-dir", str(tmp_path / "no-userspace"),
               "--control-socket", str(tmp_path / "control.sock")]
        for _ in range(2):  # the path unit runs it again on the next change
            done = await asyncio.to_thread(
                subprocess.run, cmd, capture_output=True, text=True, timeout=60,
                cwd=Path(__file__).resolve().parent.parent,
            )
            assert done.returncode == 2, done.stdout + done.stderr
        await anna.wait_for(room, lambda e: notices(stack.bot)(e) and "Remote access"
                            in e["content"]["body"])
        said = [e["content"]["body"] for e in await anna.messages(room)
                if notices(stack.bot)(e) and "Remote access" in e["content"]["body"]]
        assert len(said) == 1, said
        assert "could not be set up" in said[0] and "WireGuard" in said[0]
        assert "at home everything works" in said[0]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        await runner.cleanup()  # type: ignore[attr-defined]
