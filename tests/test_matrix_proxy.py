"""The Matrix client API through the web service's HTTPS site (appliance/web/matrix_proxy.py).

A real Matrix client (matrix-nio, trusting only the appliance's own root) logs in, chats and
moves media through the proxy to the session Synapse; a scripted upstream checks the
details a real homeserver would not show (headers, streaming both ways, broken answers)."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nio import (
    AsyncClient,
    DownloadError,
    LoginResponse,
    RoomCreateResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)
from yarl import URL

from appliance.web.app import make_app
from appliance.web.ca import CertificateAuthority
from appliance.web.config import WebSettings
from tests.plugins.web import forged_peer

OUTSIDER = "10.100.7.2"  # a family phone on WireGuard, far from home: its tunnel address
STRANGER = "203.0.113.9"  # someone on the internet


@dataclass
class ProxySite:
    https: str  # https://127.0.0.1:port
    http: str  # the same app over plain HTTP
    client_ssl: ssl.SSLContext  # trusts our root only
    settings: WebSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def certificate_authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    ca = CertificateAuthority(tmp_path_factory.mktemp("proxyca") / "ca", "textbridge.local")
    ca.ensure((), ("127.0.0.1",))
    return ca


@pytest.fixture
async def proxy_site(
    tmp_path: Path, certificate_authority: CertificateAuthority
) -> AsyncIterator[Callable[..., Awaitable[ProxySite]]]:
    runners: list[web.AppRunner] = []

    async def start(upstream: str | None, *, remote: str | None = OUTSIDER) -> ProxySite:
        settings = WebSettings(
            state_dir=tmp_path / f"web{len(runners)}",
            port=0,
            homeserver_upstream=upstream,
        )
        app = make_app(settings)
        # Setup is not complete, so the owner's pages would want the owner; the Matrix
        # paths must not care (but they answer the home network and the tunnel only).
        app.middlewares.insert(0, forged_peer(lambda: remote))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(
            certificate_authority.server_cert_path, certificate_authority.server_key_path
        )
        tls_port, plain_port = _free_port(), _free_port()
        await web.TCPSite(runner, "127.0.0.1", tls_port, ssl_context=server_ctx).start()
        await web.TCPSite(runner, "127.0.0.1", plain_port).start()
        client_ctx = ssl.create_default_context(cafile=str(certificate_authority.ca_cert_path))
        return ProxySite(
            f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{plain_port}", client_ctx,
            settings,
        )

    yield start
    for runner in runners:
        await runner.cleanup()


# -- a real client against the session Synapse -------------------------------------------


@pytest.mark.synapse
async def test_matrix_client_over_https(
    proxy_site: Any, synapse: Any, make_user: Any, tmp_path: Path
) -> None:
    site: ProxySite = await proxy_site(synapse.url)
    user = await make_user("proxied")
    client = AsyncClient(site.https, user.mxid, ssl=site.client_ssl)
    try:
        login = await client.login(user.password, device_name="proxy test")
        assert isinstance(login, LoginResponse), login
        room = await client.room_create(name="Through the proxy")
        assert isinstance(room, RoomCreateResponse), room
        first = await client.sync(timeout=0)
        assert isinstance(first, SyncResponse), first

        sent = await client.room_send(
            room.room_id, "m.room.message", {"msgtype": "m.text", "body": "hello via https"}
        )
        assert isinstance(sent, RoomSendResponse), sent
        # A long poll: Synapse answers as soon as the event is there.
        later = await client.sync(timeout=10_000, since=first.next_batch)
        assert isinstance(later, SyncResponse), later
        bodies = [
            getattr(event, "body", None)
            for event in later.rooms.join[room.room_id].timeline.events
        ]
        assert "hello via https" in bodies

        blob = os.urandom(3 * 1024 * 1024)
        uploaded, _ = await client.upload(
            io.BytesIO(blob), "application/octet-stream", "blob.bin", filesize=len(blob)
        )
        assert isinstance(uploaded, UploadResponse), uploaded
        downloaded = await client.download(uploaded.content_uri)
        assert not isinstance(downloaded, DownloadError), downloaded
        assert downloaded.body == blob

        # What the proxy adds and leaves out, on a real homeserver's answer.
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{site.https}/_matrix/client/v3/account/whoami",
                ssl=site.client_ssl,
                headers={"Authorization": f"Bearer {client.access_token}"},
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["user_id"] == user.mxid
                assert "Set-Cookie" not in resp.headers
                assert resp.headers.getall("Access-Control-Allow-Origin") == ["*"]
            async with http.get(
                f"{site.https}/_matrix/client/v3/account/whoami", ssl=site.client_ssl
            ) as resp:
                assert resp.status == 401  # the homeserver's own answer, passed through
                assert (await resp.json())["errcode"] == "M_MISSING_TOKEN"
                assert "Set-Cookie" not in resp.headers
    finally:
        await client.close()


# -- the proxy's own answers -----------------------------------------------------------------


async def test_well_known_client(proxy_site: Any) -> None:
    site: ProxySite = await proxy_site("http://127.0.0.1:9")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.https}/.well-known/matrix/client",
                            ssl=site.client_ssl) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert await resp.json() == {"m.homeserver": {"base_url": site.https}}
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Set-Cookie" not in resp.headers
        # The name the phone used, without the default port.
        async with http.get(f"{site.https}/.well-known/matrix/client", ssl=site.client_ssl,
                            headers={"Host": "textbridge.local"}) as resp:
            data = await resp.json()
            assert data == {"m.homeserver": {"base_url": "https://textbridge.local"}}
        async with http.get(f"{site.https}/.well-known/matrix/client", ssl=site.client_ssl,
                            headers={"Host": "textbridge.local:443"}) as resp:
            data = await resp.json()
            assert data == {"m.homeserver": {"base_url": "https://textbridge.local"}}
        async with http.get(f"{site.https}/.well-known/matrix/client", ssl=site.client_ssl,
                            headers={"Host": 'evil"host/x'}) as resp:
            assert resp.status == 400


async def test_strangers_get_no_matrix_api(proxy_site: Any) -> None:
    site: ProxySite = await proxy_site("http://127.0.0.1:9", remote=STRANGER)
    async with aiohttp.ClientSession() as http:
        for path in ("/_matrix/client/versions", "/_synapse/client/x",
                     "/.well-known/matrix/client"):
            async with http.get(f"{site.https}{path}", ssl=site.client_ssl) as resp:
                assert resp.status == 403, path
                assert "Set-Cookie" not in resp.headers


async def test_cors_preflight_is_answered_without_the_homeserver(proxy_site: Any) -> None:
    site: ProxySite = await proxy_site("http://127.0.0.1:9")  # nothing listens there
    async with aiohttp.ClientSession() as http, http.options(
        f"{site.https}/_matrix/client/v3/login",
        ssl=site.client_ssl,
        headers={
            "Origin": "https://app.element.io",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    ) as resp:
        assert resp.status in (200, 204)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
        assert methods >= {"GET", "POST", "PUT", "DELETE", "OPTIONS"}
        allowed = {h.strip().lower()
                   for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed >= {"x-requested-with", "content-type", "authorization"}
        assert "Set-Cookie" not in resp.headers


async def test_homeserver_down_is_a_matrix_error(proxy_site: Any) -> None:
    site: ProxySite = await proxy_site(f"http://127.0.0.1:{_free_port()}")
    async with aiohttp.ClientSession() as http:
        for method, path in (("GET", "/_matrix/client/versions"),
                             ("POST", "/_matrix/client/v3/login"),
                             ("GET", "/_synapse/client/pick_username/account_details")):
            async with http.request(method, f"{site.https}{path}", ssl=site.client_ssl,
                                    json={"type": "m.login.password"}) as resp:
                assert resp.status == 502, path
                assert await resp.json() == {
                    "errcode": "M_UNKNOWN", "error": "The homeserver is not running"
                }
                assert "Set-Cookie" not in resp.headers
                if path.startswith("/_matrix/"):
                    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_plain_http_gets_no_matrix(proxy_site: Any) -> None:
    upstream = Upstream()
    base = await upstream.start()
    try:
        site: ProxySite = await proxy_site(base, remote=None)
        async with aiohttp.ClientSession() as http:
            for path in ("/_matrix/client/versions", "/.well-known/matrix/client"):
                async with http.get(f"{site.http}{path}") as resp:
                    assert resp.status == 403, path
                    assert (await resp.json())["errcode"] == "M_FORBIDDEN"
            # The owner's pages over HTTPS are untouched: cookies, CSP and all.
            async with http.get(f"{site.https}/setup/1", ssl=site.client_ssl) as resp:
                assert resp.status == 200
                assert "Set-Cookie" in resp.headers
        assert upstream.seen == []
    finally:
        await upstream.stop()


# -- details, against a scripted upstream ----------------------------------------------------


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, list[str]]
    body: bytes


@dataclass
class Upstream:
    """A stand-in homeserver on loopback that records what arrives."""

    seen: list[Seen] = field(default_factory=list)
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = _free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers: dict[str, list[str]] = {}
        for key, value in request.headers.items():
            headers.setdefault(key.lower(), []).append(value)
        path = request.path
        if path == "/_matrix/media/v3/upload-slow":
            # Streamed upload: the first chunk arrives while the client still holds the rest.
            first = await request.content.readexactly(1024)
            self.first_chunk.set()
            body = first + await request.content.read()
        else:
            body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, headers, body))
        if path == "/_matrix/media/v3/download-slow":
            response = web.StreamResponse()
            response.content_type = "application/octet-stream"
            await response.prepare(request)
            await response.write(b"a" * 1024)
            await self.release.wait()
            await response.write(b"b" * 1024)
            await response.write_eof()
            return response
        if path == "/_matrix/media/v3/download-broken":
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"partial" * 100)
            assert request.transport is not None
            request.transport.close()
            return response
        response = web.json_response(
            {"echo": body.decode("latin-1")}, status=418 if path.endswith("/teapot") else 200
        )
        response.headers["Connection"] = "keep-alive, X-Secret-Hop"
        response.headers["X-Secret-Hop"] = "must not pass"
        response.headers["X-Upstream"] = "kept"
        response.headers["Access-Control-Allow-Origin"] = "https://only.example"
        response.set_cookie("upstream", "x", path="/_synapse/client/")
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    server = Upstream()
    base = await server.start()
    yield server, base
    await server.stop()


async def test_request_and_response_pass_through(proxy_site: Any, upstream: Any) -> None:
    server, base = upstream
    site: ProxySite = await proxy_site(base)
    async with aiohttp.ClientSession() as http:
        url = URL(f"{site.https}/_matrix/client/v3/rooms/%21room%3Ax/teapot?a=1&b=%2F",
                  encoded=True)
        async with http.put(
            url,
            ssl=site.client_ssl,
            data=b'{"k": "v"}',
            headers={
                "Authorization": "Bearer secret-token",
                "Content-Type": "application/json",
                "X-Forwarded-For": "10.9.9.9",  # forged: replaced by the real peer
                "Forwarded": "for=10.9.9.9",
                "Connection": "keep-alive, X-Client-Hop",
                "X-Client-Hop": "must not pass",
                "Cookie": "tb_session=whatever",
            },
        ) as resp:
            assert resp.status == 418
            assert await resp.json() == {"echo": '{"k": "v"}'}
            assert resp.headers["X-Upstream"] == "kept"
            assert "X-Secret-Hop" not in resp.headers
            assert resp.headers.getall("Access-Control-Allow-Origin") == ["*"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            # The homeserver's own cookie is its business; the web app adds none of its own.
            cookies = resp.headers.getall("Set-Cookie", [])
            assert all(c.startswith("upstream=") for c in cookies), cookies
    seen = server.seen[-1]
    assert seen.method == "PUT"
    assert seen.raw_path == "/_matrix/client/v3/rooms/%21room%3Ax/teapot?a=1&b=%2F"
    assert seen.headers["authorization"] == ["Bearer secret-token"]
    assert seen.headers["content-type"] == ["application/json"]
    assert seen.headers["x-forwarded-for"] == [OUTSIDER]
    assert seen.headers["x-forwarded-proto"] == ["https"]
    assert "forwarded" not in seen.headers
    assert "x-client-hop" not in seen.headers
    assert seen.body == b'{"k": "v"}'


async def test_bodies_are_streamed_both_ways(proxy_site: Any, upstream: Any) -> None:
    server, base = upstream
    site: ProxySite = await proxy_site(base)
    async with aiohttp.ClientSession() as http:
        # Download: the first kilobyte reaches the client before the upstream has finished.
        async with http.get(f"{site.https}/_matrix/media/v3/download-slow",
                            ssl=site.client_ssl) as resp:
            assert resp.status == 200
            first = await asyncio.wait_for(resp.content.readexactly(1024), 10)
            assert first == b"a" * 1024
            server.release.set()
            assert await resp.content.read() == b"b" * 1024

        # Upload: the upstream sees the first kilobyte before the client sends the rest.
        async def body() -> AsyncIterator[bytes]:
            yield b"x" * 1024
            await asyncio.wait_for(server.first_chunk.wait(), 10)
            yield b"y" * 1024

        async with http.post(f"{site.https}/_matrix/media/v3/upload-slow",
                             ssl=site.client_ssl, data=body(),
                             headers={"Content-Type": "application/octet-stream"}) as resp:
            assert resp.status == 200
    assert server.seen[-1].body == b"x" * 1024 + b"y" * 1024


async def test_a_broken_answer_is_not_passed_off_as_complete(
    proxy_site: Any, upstream: Any
) -> None:
    _, base = upstream
    site: ProxySite = await proxy_site(base)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(f"{site.https}/_matrix/media/v3/download-broken",
                                ssl=site.client_ssl) as resp:
                await resp.read()


async def test_paths_cannot_leave_the_matrix_api(proxy_site: Any, upstream: Any) -> None:
    server, base = upstream
    site: ProxySite = await proxy_site(base)
    async with aiohttp.ClientSession() as http:
        for raw in ("/_matrix/%2e%2e/_synapse/admin/v1/server_version",
                    "/_matrix/client/..%2F..%2F_synapse/admin/v1/users",
                    "/_matrix/%252e%252e/_synapse/admin/v1/users"):
            url = URL(site.https + raw, encoded=True)
            async with http.get(url, ssl=site.client_ssl) as resp:
                assert resp.status in (400, 404), raw
    assert not any("admin" in s.raw_path for s in server.seen)


def test_cli_flag_defaults_to_the_homeserver_url() -> None:
    import argparse

    from appliance.web.cli import add_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--homeserver-url", "http://127.0.0.1:8008"])
    assert settings_from_args(args).homeserver_upstream == "http://127.0.0.1:8008"
    args = parser.parse_args(["--homeserver-url", "http://127.0.0.1:8008",
                              "--homeserver-upstream", "http://127.0.0.1:6167"])
    assert settings_from_args(args).homeserver_upstream == "http://127.0.0.1:6167"
