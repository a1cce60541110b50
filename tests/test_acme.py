"""The ACME client against a real ACME server: Debian's `pebble` (Let's Encrypt's test CA).

Pebble really validates HTTP-01: it resolves the names through a tiny DNS responder run
here (every name -> 127.0.0.1) and fetches /.well-known/acme-challenge/{token} from the
aiohttp route `appliance.web.acme.add_routes` serves, on the port given as its `httpPort`.
Pebble also rejects 5% of good nonces by default, so badNonce retries happen for real.
"""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.web import acme
from tests.plugins.acme import Pebble, free_port, needs_pebble

DOMAINS = ["textbridge.test", "www.textbridge.test"]

pytestmark = needs_pebble


async def _serve(store: acme.ChallengeStore, port: int) -> web.AppRunner:
    app = web.Application()
    acme.add_routes(app, store)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def challenges(pebble: Pebble) -> AsyncIterator[acme.ChallengeStore]:
    store = acme.ChallengeStore()
    runner = await _serve(store, pebble.http_port)
    try:
        yield store
    finally:
        await runner.cleanup()


async def _fetch(pebble: Pebble, path: str) -> x509.Certificate:
    async with aiohttp.ClientSession() as session, session.get(
        pebble.management + path, ssl=pebble.ssl
    ) as resp:
        assert resp.status == 200
        return x509.load_pem_x509_certificate(await resp.read())


def _tls_handshake(cert_path: Path, key_path: Path, root: x509.Certificate, name: str) -> None:
    """A real TLS handshake (in memory): server with the new chain, client trusting only
    pebble's root and checking `name`."""
    client_ctx = ssl.create_default_context(
        cadata=root.public_bytes(serialization.Encoding.PEM).decode())
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if done[side]:
                continue
            try:
                obj.do_handshake()
                done[side] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("TLS handshake did not finish")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_issuance_end_to_end(
    pebble: Pebble, challenges: acme.ChallengeStore, tmp_path: Path
) -> None:
    paths = {"account_key_path": tmp_path / "acme" / "account.key",
             "cert_path": tmp_path / "acme" / "cert.pem",
             "key_path": tmp_path / "acme" / "key.pem"}
    await acme.obtain_certificate(
        pebble.directory, DOMAINS, challenges=challenges, contact="owner@textbridge.test",
        ssl=pebble.ssl, poll_interval=0.1, poll_timeout=30, **paths,
    )
    for path in paths.values():
        assert _mode(path) == 0o600, path
    assert challenges.answers == {}  # tokens are withdrawn afterwards

    chain = x509.load_pem_x509_certificates(paths["cert_path"].read_bytes())
    leaf = chain[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(DOMAINS)
    key = serialization.load_pem_private_key(paths["key_path"].read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert leaf.public_key() == key.public_key()

    root = await _fetch(pebble, "/roots/0")
    intermediate = await _fetch(pebble, "/intermediates/0")
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert intermediate in chain[1:]
    for name in DOMAINS:
        _tls_handshake(paths["cert_path"], paths["key_path"], root, name)
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(paths["cert_path"], paths["key_path"], root, "other.test")

    # Renewal: fresh certificate, same account (the account key is reused, not replaced).
    assert not acme.needs_renewal(paths["cert_path"], domains=DOMAINS,
                                  key_path=paths["key_path"])
    account_before = paths["account_key_path"].read_bytes()
    await acme.obtain_certificate(
        pebble.directory, DOMAINS[:1], challenges=challenges, ssl=pebble.ssl,
        poll_interval=0.1, poll_timeout=30, **paths,
    )
    assert paths["account_key_path"].read_bytes() == account_before
    renewed = x509.load_pem_x509_certificates(paths["cert_path"].read_bytes())[0]
    assert renewed.serial_number != leaf.serial_number
    assert acme.needs_renewal(paths["cert_path"], domains=DOMAINS)  # www was dropped
    assert not acme.needs_renewal(paths["cert_path"], domains=DOMAINS[:1])


async def test_needs_renewal(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)

    def write(days: int, path: Path) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "textbridge.test")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("textbridge.test")]),
                               critical=False)
                .sign(key, hashes.SHA256()))
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    fresh, old = tmp_path / "fresh.pem", tmp_path / "old.pem"
    write(60, fresh)
    write(29, old)
    assert not acme.needs_renewal(fresh)
    assert acme.needs_renewal(old)
    assert not acme.needs_renewal(old, days=7)
    assert acme.needs_renewal(fresh, now=now + dt.timedelta(days=31))
    assert acme.needs_renewal(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    assert acme.needs_renewal(tmp_path / "junk.pem")
    assert acme.needs_renewal(fresh, domains=["textbridge.test", "www.textbridge.test"])
    assert not acme.needs_renewal(fresh, domains=["TextBridge.test."])
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    assert not acme.needs_renewal(fresh, key_path=key_path)
    other = ec.generate_private_key(ec.SECP256R1())
    key_path.write_bytes(other.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    assert acme.needs_renewal(fresh, key_path=key_path)  # torn write: key without its cert


@pytest.mark.parametrize("serve", ["nothing on port 80", "another device on port 80"])
async def test_failing_challenge_is_explained(pebble: Pebble, tmp_path: Path, serve: str) -> None:
    store = acme.ChallengeStore()
    # "Another device" answers the route but knows none of our tokens.
    runner = await _serve(acme.ChallengeStore(), pebble.http_port) if "another" in serve else None
    try:
        with pytest.raises(acme.AcmeError) as caught:
            await acme.obtain_certificate(
                pebble.directory, ["broken.textbridge.test"], challenges=store,
                account_key_path=tmp_path / "account.key", cert_path=tmp_path / "cert.pem",
                key_path=tmp_path / "key.pem", ssl=pebble.ssl, poll_interval=0.1,
                poll_timeout=30,
            )
    finally:
        if runner is not None:
            await runner.cleanup()
    message = str(caught.value)
    assert message.startswith("The certificate authority ")
    assert "http://broken.textbridge.test/.well-known/acme-challenge/" in message
    assert "check that port 80 of your router forwards to Textbridge" in message
    expected = "could not reach" if "nothing" in serve else "did not get Textbridge's answer"
    assert expected in message
    assert not (tmp_path / "cert.pem").exists()
    assert not (tmp_path / "key.pem").exists()
    assert store.answers == {}


async def test_bad_nonce_is_retried(pebble: Pebble) -> None:
    async with aiohttp.ClientSession() as session:
        client = acme.AcmeClient(session, pebble.directory, acme.AccountKey.generate(),
                                 ssl=pebble.ssl)
        client.nonce = "bm90LWEtcmVhbC1ub25jZQ"  # pebble never issued it: badNonce
        await client.register()
        assert client.bad_nonce_retries >= 1
        before = client.bad_nonce_retries
        client.nonce = "bm90LWEtcmVhbC1ub25jZQ"
        order_url, order = await client.new_order(["nonce.textbridge.test"])
        assert client.bad_nonce_retries > before
        assert order["status"] == "pending"
        assert order_url.startswith("https://localhost:")


async def test_unreachable_ca_is_explained(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(acme.AcmeError, match="could not reach the certificate authority at"):
        await acme.obtain_certificate(
            f"https://127.0.0.1:{port}/dir", ["textbridge.test"],
            challenges=acme.ChallengeStore(), account_key_path=tmp_path / "account.key",
            cert_path=tmp_path / "cert.pem", key_path=tmp_path / "key.pem",
        )


def test_jws_and_thumbprint() -> None:
    """RFC 7638's rule: members crv, kty, x, y in that order, no whitespace; ES256
    signatures are r||s of 32 bytes each and verify with the public key."""
    import base64
    import hashlib
    import json

    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    account = acme.AccountKey.generate()
    jwk = account.jwk()
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")},
                           separators=(",", ":")).encode()
    assert account.thumbprint() == acme.b64u(hashlib.sha256(canonical).digest())
    assert account.key_authorization("tok") == "tok." + account.thumbprint()

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    jws = account.sign({"alg": "ES256", "nonce": "n", "url": "u"}, {"a": 1})
    signature = unb64(jws["signature"])
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    account.key.public_key().verify(der, f"{jws['protected']}.{jws['payload']}".encode(),
                                    ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64(jws["payload"])) == {"a": 1}
    assert account.sign({"alg": "ES256"}, None)["payload"] == ""


@web.middleware
async def _refuse_strangers(request: web.Request, handler: acme.Handler) -> web.StreamResponse:
    """Like the web app's home-network rule before setup: every other request gets a 403."""
    return web.Response(status=403, text="only from home")


async def test_challenge_middleware_answers_before_the_home_network_rule(
    pebble: Pebble, tmp_path: Path
) -> None:
    store = acme.ChallengeStore()
    app = web.Application(middlewares=[acme.challenge_middleware(store), _refuse_strangers])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", pebble.http_port).start()
    try:
        base = f"http://127.0.0.1:{pebble.http_port}"
        async with aiohttp.ClientSession() as session:
            store.add("tok-1", "tok-1.thumb")
            async with session.get(base + "/.well-known/acme-challenge/tok-1") as resp:
                assert (resp.status, await resp.text()) == (200, "tok-1.thumb")
            store.remove("tok-1")
            for path in ("tok-1", "..%2F..%2Fsetup.json", "a/b", ""):
                async with session.get(base + "/.well-known/acme-challenge/" + path) as resp:
                    assert resp.status == 404, path
            async with session.get(base + "/setup") as resp:
                assert resp.status == 403
        await acme.obtain_certificate(
            pebble.directory, ["mw.textbridge.test"], challenges=store,
            account_key_path=tmp_path / "account.key", cert_path=tmp_path / "cert.pem",
            key_path=tmp_path / "key.pem", ssl=pebble.ssl, poll_interval=0.1, poll_timeout=30,
        )
    finally:
        await runner.cleanup()
    assert not acme.needs_renewal(tmp_path / "cert.pem", domains=["mw.textbridge.test"],
                                  key_path=tmp_path / "key.pem")
