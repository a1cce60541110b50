"""The homeserver adapters against a real Synapse, and the Tuwunel config writer.

Tuwunel itself cannot run here; its adapter's /register and admin-API logic is exercised
against Synapse, which serves the same standard and Synapse-style endpoints (see
docs/homeserver.md for what stays untested).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.homeserver import adapter_for
from appliance.homeserver.api import MatrixHttp
from appliance.homeserver.base import (
    HomeserverAdapter,
    HomeserverError,
    LoginFailed,
    UserExists,
    UserNotFound,
)
from appliance.homeserver.registration import Registration, RegistrationError
from appliance.homeserver.synapse import DEFAULT_PYTHON, SynapseAdapter, SynapseServer
from appliance.homeserver.tuwunel import TuwunelAdapter, TuwunelConfig, write_config
from tests.plugins.synapse import SynapseFactory, create_test_user, listening_sockets

REPO = Path(__file__).resolve().parents[1]
SERVER = "textbridge.test"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def http_status(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        text = await r.text()
        return r.status, json.loads(text) if text.startswith("{") else {}


# --- the registration ------------------------------------------------------------------------


def test_registration_round_trip_and_file_mode(tmp_path: Path) -> None:
    reg = Registration.generate(url="http://127.0.0.1:29340")
    path = tmp_path / "registration.yaml"
    reg.save(path, SERVER)
    assert mode(path) == 0o600
    assert Registration.load(path) == reg
    assert len(reg.as_token) == 64 and len(reg.hs_token) == 64
    assert reg.as_token != reg.hs_token
    other = Registration.generate(url="http://127.0.0.1:29340")
    assert {other.as_token, other.hs_token}.isdisjoint({reg.as_token, reg.hs_token})
    # No temporary file is left next to it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registration.yaml"]


def test_registration_save_tightens_an_existing_loose_file(tmp_path: Path) -> None:
    path = tmp_path / "registration.yaml"
    path.write_text("old")
    path.chmod(0o644)
    Registration.generate(url="http://127.0.0.1:1").save(path, SERVER)
    assert mode(path) == 0o600


def test_registration_yaml_is_what_a_yaml_reader_sees() -> None:
    """Read back with PyYAML (Synapse's own reader, from its venv): the hand-written YAML must
    mean exactly the standard registration."""
    reg = Registration.generate(url="http://127.0.0.1:29340", user_prefix="sms_")
    script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))"
    out = subprocess.run(
        [str(DEFAULT_PYTHON), "-c", script],
        input=reg.to_yaml("family.example"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    assert data["id"] == "textbridge"
    assert data["as_token"] == reg.as_token and data["hs_token"] == reg.hs_token
    assert data["sender_localpart"] == "textbridge"
    assert data["rate_limited"] is False
    assert data["receive_ephemeral"] is True
    assert data["de.sorunome.msc2409.push_ephemeral"] is True
    users = data["namespaces"]["users"]
    assert all(ns["exclusive"] is True for ns in users)
    ghost, bot = (re.compile(ns["regex"]) for ns in users)
    assert ghost.fullmatch("@sms_491701234567:family.example")
    assert not ghost.fullmatch("@alice:family.example")
    assert not ghost.fullmatch("@sms_1:familyXexample")  # the dot is escaped
    assert bot.fullmatch("@textbridge:family.example")
    assert not bot.fullmatch("@textbridge2:family.example")
    assert data["namespaces"]["aliases"] == [] and data["namespaces"]["rooms"] == []


def test_namespace_regexes_are_anchored_for_every_homeserver(tmp_path: Path) -> None:
    """Tuwunel searches a namespace regex (unanchored: Rust's is_match, Python's re.search),
    Synapse matches it from the start (re.match): with ^ and $ both mean exactly the ghosts
    and the bot of this server. What each homeserver is given is read back from its file."""
    server = "textbridge.local"
    reg = Registration.generate(url="http://127.0.0.1:29340")
    reg.save(tmp_path / "registration.yaml", server)
    synapse_script = (
        "import json, sys, yaml; d = yaml.safe_load(sys.stdin.read());"
        "print(json.dumps([ns['regex'] for ns in d['namespaces']['users']]))"
    )
    synapse_regexes = json.loads(
        subprocess.run(
            [str(DEFAULT_PYTHON), "-c", synapse_script],
            input=(tmp_path / "registration.yaml").read_text(),
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    write_config(tmp_path / "tuwunel.toml", server_name=server, registrations=[reg])
    table = tomllib.loads((tmp_path / "tuwunel.toml").read_text())["global"]["appservice"]
    tuwunel_regexes = [ns["regex"] for ns in table["textbridge"]["users"]]
    assert synapse_regexes == tuwunel_regexes == [
        r"^@sms_.*:textbridge\.local$",
        r"^@textbridge:textbridge\.local$",
    ]
    ghost, bot = tuwunel_regexes
    assert re.fullmatch(ghost, "@sms_491701234567:textbridge.local")
    assert re.fullmatch(bot, "@textbridge:textbridge.local")
    for other in (
        "@textbridge:textbridge.localX",
        "@textbridge:textbridge.local.evil.example",
        "@sms_1:textbridge.localX",
        "@sms_1:textbridge.local.evil.example",
        "@textbridge2:textbridge.local",
        "@mum:textbridge.local",
    ):
        for regex in (ghost, bot):
            assert not re.fullmatch(regex, other), (regex, other)
            assert not re.search(regex, other), (regex, other)  # as Tuwunel matches
            assert not re.match(regex, other), (regex, other)  # as Synapse matches
    # Both readers get the prefix back from anchored and from older, unanchored files.
    assert Registration.load(tmp_path / "registration.yaml") == reg
    assert TuwunelConfig.load(tmp_path / "tuwunel.toml").appservices == (reg,)
    old = (tmp_path / "registration.yaml").read_text().replace('"^@', '"@').replace('$"', '"')
    assert "^" not in old and Registration.from_yaml(old) == reg


def test_registration_repr_hides_tokens() -> None:
    reg = Registration.generate(url="http://127.0.0.1:1")
    assert reg.as_token not in repr(reg) and reg.hs_token not in repr(reg)


def test_registration_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError):
        Registration("tb", "http://x", "same", "same", "textbridge", "sms_")
    with pytest.raises(RegistrationError):
        Registration("tb", "http://x", "a", "b", "Text Bridge", "sms_")
    with pytest.raises(RegistrationError):
        Registration("tb", "ftp://x", "a", "b", "textbridge", "sms_")
    bad = tmp_path / "bad.yaml"
    bad.write_text('id: "tb"\nurl: "http://x"\n')
    with pytest.raises(RegistrationError, match="as_token"):
        Registration.load(bad)


# --- Synapse: the server --------------------------------------------------------------------


@pytest.mark.synapse
def test_synapse_listens_on_loopback_only(synapse: SynapseServer) -> None:
    assert synapse.pid is not None
    sockets = listening_sockets(synapse.pid)
    assert (("127.0.0.1", synapse.port)) in sockets
    assert {addr for addr, _ in sockets} == {"127.0.0.1"}
    assert mode(synapse.shared_secret_path) == 0o600
    assert mode(synapse.config_path) == 0o600
    assert mode(synapse.state_dir / "signing.key") == 0o600


@pytest.mark.synapse
async def test_synapse_serves_no_federation(synapse: SynapseServer) -> None:
    for path in ("/_matrix/federation/v1/version", "/_matrix/key/v2/server"):
        status, _ = await http_status("GET", synapse.url + path)
        assert status == 404, path
    config = json.loads(synapse.config_path.read_text())
    assert config["federation_domain_whitelist"] == []
    assert [r["names"] for r in config["listeners"][0]["resources"]] == [["client"]]


@pytest.mark.synapse
async def test_synapse_registration_is_closed(synapse: SynapseServer) -> None:
    url = synapse.url + "/_matrix/client/v3/register"
    status, body = await http_status("POST", url, json={"username": "x1", "password": "p" * 20})
    assert status == 403, body
    status, body = await http_status(
        "POST",
        url,
        json={"username": "x1", "password": "p" * 20, "auth": {"type": "m.login.dummy"}},
    )
    assert status == 403, body
    status, _ = await http_status("POST", url + "?kind=guest", json={})
    assert status == 403


# --- Synapse: accounts ----------------------------------------------------------------------


@pytest.mark.synapse
async def test_users_create_exist_password_deactivate(synapse_adapter: SynapseAdapter) -> None:
    adapter: HomeserverAdapter = synapse_adapter
    user = await create_test_user(adapter, "life")
    localpart = user.localpart
    assert user.mxid == f"@{localpart}:{SERVER}"
    assert await adapter.user_exists(localpart)
    assert not await adapter.user_exists(localpart + "_nobody")
    with pytest.raises(UserExists):
        await adapter.create_user(localpart, "another password")
    # The duplicate attempt did not change the password.
    token = await adapter.login(localpart, user.password)
    http = MatrixHttp(adapter.url, SERVER)
    assert await http.whoami(token) == user.mxid

    await adapter.set_password(localpart, "a new long password")
    with pytest.raises(LoginFailed):
        await adapter.login(localpart, user.password)
    # A reset ends the sessions that used the old password.
    with pytest.raises(HomeserverError) as old:
        await http.whoami(token)
    assert old.value.errcode == "M_UNKNOWN_TOKEN"
    await adapter.login(localpart, "a new long password")

    await adapter.deactivate_user(localpart)
    with pytest.raises(LoginFailed):
        await adapter.login(localpart, "a new long password")
    assert await adapter.user_exists(localpart)  # the name stays taken
    with pytest.raises(UserExists):
        await adapter.create_user(localpart, "x" * 20)


@pytest.mark.synapse
async def test_unknown_users_and_admin_flag(
    synapse_adapter: SynapseAdapter, make_user: object
) -> None:
    with pytest.raises(UserNotFound):
        await synapse_adapter.set_password("nobody_here", "x" * 20)
    with pytest.raises(UserNotFound):
        await synapse_adapter.deactivate_user("nobody_here")
    plain = await make_user("plain")  # type: ignore[operator]
    boss = await make_user("boss", admin=True)  # type: ignore[operator]
    http = MatrixHttp(synapse_adapter.url, SERVER)
    # Only the admin may use the admin API.
    with pytest.raises(HomeserverError):
        await http.admin_create_registration_token(plain.access_token, uses=1, expiry_ms=None)
    assert await http.admin_create_registration_token(boss.access_token, uses=1, expiry_ms=None)
    # Creation left no device behind: the one login the helper made is the only one.
    status, body = await http.request("GET", "/_matrix/client/v3/devices", token=plain.access_token)
    assert status == 200 and len(body["devices"]) == 1


@pytest.mark.synapse
async def test_adapter_relogs_when_its_admin_token_is_revoked(
    synapse_adapter: SynapseAdapter,
) -> None:
    assert await synapse_adapter.user_exists("textbridge-admin")
    creds = json.loads(synapse_adapter.admin_credentials_path.read_text())
    assert mode(synapse_adapter.admin_credentials_path) == 0o600
    await MatrixHttp(synapse_adapter.url, SERVER).logout(creds["access_token"])
    assert await synapse_adapter.user_exists("textbridge-admin")
    assert (
        json.loads(synapse_adapter.admin_credentials_path.read_text())["access_token"]
        != (creds["access_token"])
    )


# --- registration tokens, the standard UIA flow, and the Tuwunel adapter's logic ----------


@pytest.mark.synapse
async def test_registration_token_flow(synapse_factory: SynapseFactory, tmp_path: Path) -> None:
    server = await synapse_factory.start(registration_tokens=True)
    adapter = SynapseAdapter.for_server(server)
    http = MatrixHttp(server.url, SERVER)

    # Without a token the server asks for one (UIA), it does not register.
    status, body = await http.request(
        "POST", "/_matrix/client/v3/register", body={"username": "t1", "password": "p" * 20}
    )
    assert status == 401
    assert any("m.login.registration_token" in f["stages"] for f in body["flows"])
    with pytest.raises(HomeserverError):
        await http.register_with_token("t1", "p" * 20, "not-a-token")

    token = await adapter.create_registration_token(uses=1, expiry_ms=60_000)
    assert len(token) == 32 and token.isalnum()
    mxid, access = await http.register_with_token("t1", "p" * 20, token)
    assert mxid == f"@t1:{SERVER}"
    assert await http.whoami(access) == mxid
    with pytest.raises(HomeserverError):
        await http.register_with_token("t2", "p" * 20, token)  # one use only
    assert await http.username_taken("t1")
    assert not await http.username_taken("t2")

    with pytest.raises(ValueError):
        await adapter.create_registration_token(uses=5, expiry_ms=0)
    with pytest.raises(ValueError):
        await adapter.create_registration_token(uses=0)
    short = await adapter.create_registration_token(uses=5, expiry_ms=800)
    await asyncio.sleep(1.0)
    with pytest.raises(HomeserverError):
        await http.register_with_token("t3", "p" * 20, short)
    assert not await http.username_taken("t3")

    # The Tuwunel adapter, pointed at this Synapse: Tuwunel's static config token becomes a
    # many-use Synapse token. Tuwunel makes its first account admin; here the Synapse admin
    # does that for it, then the adapter runs entirely on its own.
    config_path = tmp_path / "tuwunel.toml"
    config, _ = write_config(config_path, server_name=SERVER)
    many = await adapter.create_registration_token(uses=20)
    TuwunelConfig(server_name=SERVER, registration_token=many, port=config.port).save(config_path)
    tuwunel = TuwunelAdapter(
        config_path, state_dir=tmp_path / "tw", url=server.url, admin_localpart="tw-admin"
    )
    with pytest.raises(HomeserverError):
        await tuwunel.create_user("early", "p" * 20, admin=True)  # its admin is not admin yet
    assert await tuwunel.user_exists("early")  # registered before the admin step failed
    assert await tuwunel.user_exists("tw-admin")
    status, body = await http.request(
        "PUT",
        f"/_synapse/admin/v2/users/@tw-admin:{SERVER}",
        token=(await adapter._admin()).access_token,
        body={"admin": True},
    )
    assert status == 200, body
    mxid = await tuwunel.create_user("mum", "mum password 123", admin=True, displayname="Mum")
    assert mxid == f"@mum:{SERVER}"
    assert await tuwunel.user_exists("mum")
    with pytest.raises(UserExists):
        await tuwunel.create_user("mum", "p" * 20)
    mum = await tuwunel.login("mum", "mum password 123")
    status, profile = await http.request("GET", f"/_matrix/client/v3/profile/@mum:{SERVER}")
    assert profile.get("displayname") == "Mum"
    status, devices = await http.request("GET", "/_matrix/client/v3/devices", token=mum)
    assert len(devices["devices"]) == 1  # the registration's device was logged out
    status, admin = await http.request(
        "GET", f"/_synapse/admin/v1/users/@mum:{SERVER}/admin", token=mum
    )
    assert status == 200 and admin["admin"] is True
    await tuwunel.set_password("mum", "changed password 1")
    await tuwunel.login("mum", "changed password 1")
    one_use = await tuwunel.create_registration_token()
    await http.register_with_token("kid", "p" * 20, one_use)
    await tuwunel.deactivate_user("kid")
    with pytest.raises(LoginFailed):
        await tuwunel.login("kid", "p" * 20)


# --- appservice registration ----------------------------------------------------------------


@pytest.mark.synapse
async def test_installed_appservice_is_honoured(synapse_factory: SynapseFactory) -> None:
    server = await synapse_factory.start()
    adapter = SynapseAdapter.for_server(server)
    user = await create_test_user(adapter, "before")
    reg = Registration.generate(url="http://127.0.0.1:9")
    http = MatrixHttp(server.url, SERVER)
    with pytest.raises(HomeserverError):
        await http.whoami(reg.as_token)

    assert await adapter.install_appservice(reg) is True
    assert await adapter.install_appservice(reg) is False  # nothing new: no restart needed
    await server.restart()
    http = MatrixHttp(server.url, SERVER)
    assert await http.whoami(reg.as_token) == f"@textbridge:{SERVER}"
    # Ghosts in the namespace are registered the standard appservice way, then usable.
    status, body = await http.request(
        "POST",
        "/_matrix/client/v3/register",
        token=reg.as_token,
        body={"type": "m.login.application_service", "username": "sms_491701234567"},
    )
    assert status == 200, body
    status, body = await http.request(
        "GET",
        f"/_matrix/client/v3/account/whoami?user_id=@sms_491701234567:{SERVER}",
        token=reg.as_token,
    )
    assert status == 200 and body["user_id"] == f"@sms_491701234567:{SERVER}"
    # The namespace is exclusive: nobody else may take a ghost's name.
    with pytest.raises(HomeserverError):
        await adapter.create_user("sms_123", "p" * 20)
    # The restart kept the data.
    await adapter.login(user.localpart, user.password)

    # A new server object on the same state keeps the appservice installed.
    await server.stop()
    again = synapse_factory.create(state_dir=server.state_dir)
    await again.start()
    assert await MatrixHttp(again.url, SERVER).whoami(reg.as_token) == f"@textbridge:{SERVER}"


@pytest.mark.synapse
async def test_outage_helpers(synapse_factory: SynapseFactory) -> None:
    server = await synapse_factory.start()
    adapter = SynapseAdapter.for_server(server)
    user = await create_test_user(adapter, "outage")
    server.pause()
    assert not await MatrixHttp(server.url, SERVER).is_up(timeout=1.0)
    server.resume()
    assert await adapter.is_up()
    server.kill()
    assert not server.running
    assert not await adapter.is_up()
    await server.start()  # after SIGKILL, with the same data
    await adapter.login(user.localpart, user.password)


# --- bootstrap ------------------------------------------------------------------------------


def run_bootstrap(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "appliance", "homeserver", "bootstrap",
            "--kind", "synapse", "--state", str(state), "--server-name", SERVER,
            "--bridge-url", "http://127.0.0.1:29340", "--owner", "alice",
            "--family", "bob,carol", *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.synapse
async def test_bootstrap_twice_is_idempotent(
    tmp_path: Path, synapse_factory: SynapseFactory
) -> None:
    state = tmp_path / "state"
    first = run_bootstrap(state)
    assert first.returncode == 0, first.stdout + first.stderr
    creds_path = state / "credentials.json"
    reg_path = state / "registration.yaml"
    assert mode(creds_path) == 0o600 and mode(reg_path) == 0o600 and mode(state) == 0o700
    creds = json.loads(creds_path.read_text())
    reg = Registration.load(reg_path)
    passwords = {lp: a["password"] for lp, a in creds["accounts"].items()}
    assert sorted(passwords) == ["alice", "bob", "carol"]
    assert len(set(passwords.values())) == 3
    for secret in [*passwords.values(), reg.as_token, reg.hs_token]:
        assert secret not in first.stdout + first.stderr

    second = run_bootstrap(state)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "created" not in second.stdout
    assert Registration.load(reg_path) == reg
    assert json.loads(creds_path.read_text()) == creds

    third = run_bootstrap(state, "--family", "bob,dave", "--show-passwords")
    assert third.returncode == 0, third.stdout + third.stderr
    dave = json.loads(creds_path.read_text())["accounts"]["dave"]["password"]
    assert dave in third.stdout
    assert passwords["alice"] not in third.stdout

    server = synapse_factory.create(state_dir=state / "synapse")
    await server.start()
    adapter = adapter_for("synapse", state_dir=state, url=server.url, server_name=SERVER)
    for localpart, password in [*passwords.items(), ("dave", dave)]:
        await adapter.login(localpart, password)
    assert await MatrixHttp(server.url, SERVER).whoami(reg.as_token) == f"@textbridge:{SERVER}"
    status, body = await MatrixHttp(server.url, SERVER).request(
        "GET",
        f"/_synapse/admin/v1/users/@alice:{SERVER}/admin",
        token=await adapter.login("alice", passwords["alice"]),
    )
    assert status == 200 and body["admin"] is True


@pytest.mark.synapse
async def test_bootstrap_keeps_an_account_it_did_not_make(
    tmp_path: Path, synapse_factory: SynapseFactory
) -> None:
    state = tmp_path / "state"
    server = synapse_factory.create(state_dir=state / "synapse")
    await server.start()
    adapter = SynapseAdapter.for_server(server, state_dir=state)
    await adapter.create_user("bob", "bobs own password")
    # A run that crashed between recording carol's password and confirming her account.
    await adapter.create_user("carol", "carols recorded password")
    pending = {"mxid": f"@carol:{SERVER}", "password": "carols recorded password"}
    (state / "credentials.json").write_text(
        json.dumps({"accounts": {"carol": {**pending, "confirmed": False}}})
    )
    await server.stop()
    result = run_bootstrap(state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept bob (password not in the credentials file)" in result.stdout
    assert "kept carol\n" in result.stdout
    accounts = json.loads((state / "credentials.json").read_text())["accounts"]
    assert "bob" not in accounts
    assert accounts["carol"]["confirmed"] is True
    assert accounts["carol"]["password"] == "carols recorded password"
    assert mode(state / "credentials.json") == 0o600
    await server.start()
    await adapter.login("bob", "bobs own password")


def test_bootstrap_rejects_bad_localparts(tmp_path: Path) -> None:
    result = run_bootstrap(tmp_path, "--owner", "Alice Smith")
    assert result.returncode == 2
    assert "Alice Smith" in result.stderr


# --- Tuwunel config -------------------------------------------------------------------------

# Every [global] key this module writes, as spelled in tuwunel-example.toml (Tuwunel 1.9).
# Tuwunel only warns about unknown keys, so a typo would silently fall back to a default.
OPEN_REGISTRATION = "yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse"
TUWUNEL_KEYS = {
    "server_name", "database_path", "address", "port", "allow_registration",
    "registration_token", OPEN_REGISTRATION,
    "allow_guest_registration", "grant_admin_to_first_user", "create_admin_room",
    "allow_federation", "federate_admin_room", "allow_public_room_directory_over_federation",
    "trusted_servers", "allow_incoming_presence", "allow_outgoing_presence",
    "new_user_displayname_suffix", "log", "appservice",
}  # fmt: skip
APPSERVICE_KEYS = {
    "url", "as_token", "hs_token", "sender_localpart", "rate_limited", "receive_ephemeral",
    "users", "rooms", "aliases", "protocols", "device_management",
    "msc3202_transaction_extensions",
}  # fmt: skip


def test_tuwunel_config_security_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tuwunel.toml"
    reg = Registration.generate(url="http://127.0.0.1:29340")
    config, changed = write_config(
        path, server_name="family.example", database_path=tmp_path / "db", registrations=[reg]
    )
    assert changed
    assert mode(path) == 0o600
    raw = tomllib.loads(path.read_text())
    glob = raw["global"]
    assert set(glob) <= TUWUNEL_KEYS
    assert glob["server_name"] == "family.example"
    assert glob["database_path"] == str(tmp_path / "db")
    assert glob["address"] == ["127.0.0.1"]
    assert glob["port"] == 6167
    assert glob["allow_federation"] is False
    assert glob["allow_guest_registration"] is False
    assert glob["trusted_servers"] == []
    assert glob["new_user_displayname_suffix"] == ""
    # Registration is on only behind a generated token: never open.
    assert glob["allow_registration"] is True
    assert len(glob["registration_token"]) == 32
    assert glob[OPEN_REGISTRATION] is False
    table = glob["appservice"]["textbridge"]
    assert set(table) <= APPSERVICE_KEYS
    assert table["as_token"] == reg.as_token and table["hs_token"] == reg.hs_token
    assert table["sender_localpart"] == "textbridge"
    assert table["rate_limited"] is False
    ghost, bot = (re.compile(ns["regex"]) for ns in table["users"])
    assert all(ns["exclusive"] is True for ns in table["users"])
    assert ghost.fullmatch("@sms_4915112345:family.example")
    assert not ghost.fullmatch("@mum:family.example")
    assert bot.fullmatch("@textbridge:family.example")
    assert TuwunelConfig.load(path) == config
    assert TuwunelConfig.load(path).appservices == (reg,)
    assert config.registration_token not in repr(config)


def test_tuwunel_config_rewrite_keeps_secrets(tmp_path: Path) -> None:
    path = tmp_path / "tuwunel.toml"
    first, changed = write_config(path, server_name="family.example")
    assert changed and first.appservices == ()
    again, changed = write_config(path, server_name="family.example")
    assert not changed and again.registration_token == first.registration_token
    other, _ = write_config(tmp_path / "other.toml", server_name="family.example")
    assert other.registration_token != first.registration_token

    adapter = adapter_for("tuwunel", state_dir=tmp_path, config_path=path)
    assert isinstance(adapter, TuwunelAdapter)
    assert adapter.url == "http://127.0.0.1:6167"
    reg = Registration.generate(url="http://127.0.0.1:29340")
    moved = Registration(
        reg.id, "http://127.0.0.1:29341", reg.as_token, reg.hs_token, "textbridge", "sms_"
    )

    async def install() -> list[bool]:
        return [
            await adapter.install_appservice(reg),
            await adapter.install_appservice(reg),
            await adapter.install_appservice(moved),
        ]

    assert asyncio.run(install()) == [True, False, True]
    after = TuwunelConfig.load(path)
    assert after.appservices == (moved,)  # replaced, not added
    assert after.registration_token == first.registration_token
    with pytest.raises(ValueError, match="server name"):
        write_config(path, server_name="elsewhere.example")


def run_tuwunel_bootstrap(state: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "appliance", "homeserver", "bootstrap",
            "--kind", "tuwunel", "--state", str(state), "--server-name", SERVER,
            "--bridge-url", "http://127.0.0.1:29340", "--owner", "alice",
            "--tuwunel-port", str(port), "--tuwunel-database", str(state / "db"), "--wait", "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.synapse
def test_tuwunel_bootstrap_asks_for_a_restart(tmp_path: Path, synapse: SynapseServer) -> None:
    """A server that answers but rejects the new as_token has not loaded the config: the
    command says so and exits 3 without creating accounts. (Synapse stands in for a Tuwunel
    still running its old config.)"""
    result = run_tuwunel_bootstrap(tmp_path, synapse.port)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Restart Tuwunel" in result.stderr
    config = TuwunelConfig.load(tmp_path / "tuwunel.toml")
    assert config.port == synapse.port
    assert config.appservices == (Registration.load(tmp_path / "registration.yaml"),)
    assert not (tmp_path / "credentials.json").exists()
    assert config.registration_token not in result.stdout + result.stderr


def test_tuwunel_bootstrap_reports_a_silent_server(tmp_path: Path) -> None:
    from appliance.homeserver.synapse import free_port

    result = run_tuwunel_bootstrap(tmp_path, free_port())
    assert result.returncode == 1
    assert "did not answer" in result.stderr
