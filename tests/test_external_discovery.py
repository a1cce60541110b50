"""Finding the family's homeserver from what the owner types: a domain whose
/.well-known/matrix/client delegates to the real client API (here a small web server on
loopback standing for example.org's website, pointing at a real Synapse), a URL, and an
address that is not a Matrix server at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliance.homeserver.link import check_server
from appliance.homeserver.synapse import SynapseServer

pytestmark = pytest.mark.synapse


@pytest.fixture
async def website(synapse: SynapseServer) -> AsyncIterator[Any]:
    async def well_known(_: web.Request) -> web.Response:
        return web.json_response({"m.homeserver": {"base_url": synapse.url + "/"}})

    async def not_found(_: web.Request) -> web.Response:
        return web.Response(status=404, text="no such page")

    app = web.Application()
    app.router.add_get("/.well-known/matrix/client", well_known)
    app.router.add_get("/_matrix/client/versions", not_found)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_a_domain_delegates_to_its_homeserver(website: Any, synapse: SynapseServer) -> None:
    domain = f"http://127.0.0.1:{website.port}"
    found = await check_server(domain)
    assert found.problem is None, found.problem
    assert found.well_known == synapse.url and found.url == synapse.url
    assert found.versions


async def test_the_client_api_url_itself(synapse: SynapseServer) -> None:
    found = await check_server(synapse.url + "/")
    assert found.problem is None and found.url == synapse.url and found.versions


async def test_a_website_that_is_no_homeserver(website: Any) -> None:
    # A path given: the well-known is not followed, and that address is checked as is.
    found = await check_server(f"http://127.0.0.1:{website.port}/matrix")
    assert found.problem is not None and found.problem.key == "not-matrix"
    assert "not as a Matrix homeserver" in found.problem.words


async def test_nothing_there() -> None:
    from appliance.homeserver.synapse import free_port

    found = await check_server(f"http://127.0.0.1:{free_port()}")
    assert found.problem is not None and found.problem.key == "unreachable"
    bad = await check_server("http://")
    assert bad.problem is not None and bad.problem.key == "bad-address"
