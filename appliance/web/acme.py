"""A small ACME v2 client (RFC 8555), so a family with its own domain gets a publicly trusted
certificate (Let's Encrypt) instead of installing the appliance's root on every phone.

Only what the appliance needs: one EC P-256 account key (ES256 signatures), one order for
one or more DNS names, HTTP-01 challenges answered by the appliance's own web service on
port 80 (`add_routes`), an EC P-256 certificate key, and the chain saved as PEM. Keys and
certificates are written atomically and 0600. Every failure is an `AcmeError` whose message
tells a person what to check (usually the router's port 80 forwarding or the domain's DNS).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import re
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from appliance.files import write_private

log = logging.getLogger(__name__)

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
RENEW_BEFORE_DAYS = 30
NONCE_RETRIES = 5
ERROR_NS = "urn:ietf:params:acme:error:"
SslArg = ssl_module.SSLContext | bool | None


class AcmeError(Exception):
    """Obtaining a certificate failed; the message is meant for the family's owner."""

    def __init__(self, message: str, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.problem: dict[str, Any] = dict(problem or {})

    @property
    def type(self) -> str:
        return str(self.problem.get("type", ""))


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


# -- the account key ----------------------------------------------------------------------


class AccountKey:
    """An EC P-256 key that signs JWS with ES256."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the ACME account key must be EC P-256")
        self.key = key

    @classmethod
    def generate(cls) -> AccountKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, path: Path) -> AccountKey:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            account = cls.generate()
            write_private(path, _pem_key(account.key))
            return account
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AcmeError(f"{path} is not an EC private key; move it away to make a new one")
        return cls(key)

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": b64u(numbers.x.to_bytes(32, "big")),
            "y": b64u(numbers.y.to_bytes(32, "big")),
        }

    def thumbprint(self) -> str:
        """RFC 7638: SHA-256 over the required members in lexicographic order, no spaces."""
        return b64u(hashlib.sha256(_json_bytes(self.jwk())).digest())

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint()}"

    def sign(self, protected: Mapping[str, Any], payload: Any | None) -> dict[str, str]:
        """A flattened JWS. `payload=None` makes a POST-as-GET (empty payload)."""
        protected_b64 = b64u(_json_bytes(dict(protected)))
        payload_b64 = "" if payload is None else b64u(_json_bytes(payload))
        der = self.key.sign(f"{protected_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return {"protected": protected_b64, "payload": payload_b64, "signature": b64u(signature)}


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- HTTP-01 challenge answers ------------------------------------------------------------


@dataclass
class ChallengeStore:
    """Key authorizations by token, answered at /.well-known/acme-challenge/{token}."""

    answers: dict[str, str] = field(default_factory=dict)

    def add(self, token: str, key_authorization: str) -> None:
        self.answers[token] = key_authorization

    def remove(self, token: str) -> None:
        self.answers.pop(token, None)

    def get(self, token: str) -> str | None:
        return self.answers.get(token)


CHALLENGE_STORE_KEY = web.AppKey("acme_challenges", ChallengeStore)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answer(store: ChallengeStore, token: str) -> web.Response:
    answer = store.get(token) if _TOKEN.fullmatch(token) else None
    if answer is None:
        return web.Response(status=404, text="no such challenge\n")
    return web.Response(text=answer, content_type="text/plain")


async def _challenge_handler(request: web.Request) -> web.Response:
    return _answer(request.app[CHALLENGE_STORE_KEY], request.match_info["token"])


def add_routes(app: web.Application, store: ChallengeStore) -> None:
    """Answer HTTP-01 challenges on `app` as an ordinary route (call before the app starts).
    An app whose middlewares refuse strangers needs `challenge_middleware` instead."""
    app[CHALLENGE_STORE_KEY] = store
    app.router.add_get(CHALLENGE_PREFIX + "{token}", _challenge_handler)


def challenge_middleware(store: ChallengeStore) -> Middleware:
    """Answer HTTP-01 challenges before any later middleware runs. Put it first: the
    certificate authority's checks come from the internet, also before setup is complete,
    when the web app answers only the home network; no session or cookie is involved."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path.startswith(CHALLENGE_PREFIX):
            return _answer(store, request.path[len(CHALLENGE_PREFIX):])
        return await handler(request)

    return middleware


# -- the protocol ---------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise AcmeError("The certificate authority sent an answer Textbridge does not "
                             "understand (not JSON).") from exc
        if not isinstance(value, dict):
            raise AcmeError("The certificate authority sent an unexpected answer.")
        return value


class AcmeClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        directory_url: str,
        account: AccountKey,
        *,
        ssl: SslArg = None,
        poll_interval: float = 1.0,
        timeout: float = 300.0,
    ) -> None:
        self.session = session
        self.directory_url = directory_url
        self.account = account
        self.ssl: SslArg = ssl
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.directory: dict[str, Any] = {}
        self.kid: str | None = None
        self.nonce: str | None = None
        self.bad_nonce_retries = 0  # for tests and logs

    # transport

    def _ssl(self) -> ssl_module.SSLContext | bool:
        return True if self.ssl is None else self.ssl

    async def _request(
        self, method: str, url: str, *, data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Reply:
        try:
            async with self.session.request(
                method, url, data=data, headers=dict(headers or {}), ssl=self._ssl(),
                timeout=aiohttp.ClientTimeout(total=60),
            ) as resp:
                body = await resp.read()
                nonce = resp.headers.get("Replay-Nonce")
                if nonce:
                    self.nonce = nonce
                return _Reply(resp.status, dict(resp.headers), body)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise AcmeError(
                f"Textbridge could not check the certificate authority's identity at {url} "
                f"({exc.certificate_error}): check the date and time of the appliance."
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AcmeError(
                f"Textbridge could not reach the certificate authority at {url}: check that "
                f"the appliance is connected to the internet ({type(exc).__name__}: {exc})."
            ) from exc

    async def get_directory(self) -> dict[str, Any]:
        if not self.directory:
            reply = await self._request("GET", self.directory_url)
            if reply.status != 200:
                raise AcmeError(f"The address {self.directory_url} is not an ACME certificate "
                                f"authority (it answered HTTP {reply.status}).")
            self.directory = reply.json()
            for name in ("newNonce", "newAccount", "newOrder"):
                if not isinstance(self.directory.get(name), str):
                    raise AcmeError(f"The address {self.directory_url} is not an ACME "
                                    "certificate authority (its directory is incomplete).")
        return self.directory

    async def _fresh_nonce(self) -> str:
        directory = await self.get_directory()
        await self._request("HEAD", directory["newNonce"])
        if not self.nonce:
            raise AcmeError("The certificate authority did not hand out a nonce.")
        return self.nonce

    async def post(
        self, url: str, payload: Any | None, *, use_jwk: bool = False,
        accept: str | None = None,
    ) -> _Reply:
        """A signed POST (payload None = POST-as-GET), retrying on badNonce."""
        for attempt in range(NONCE_RETRIES + 1):
            nonce = self.nonce or await self._fresh_nonce()
            self.nonce = None  # every nonce is used once
            protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
            if use_jwk or self.kid is None:
                protected["jwk"] = self.account.jwk()
            else:
                protected["kid"] = self.kid
            headers = {"Content-Type": "application/jose+json"}
            if accept:
                headers["Accept"] = accept
            body = json.dumps(self.account.sign(protected, payload)).encode()
            reply = await self._request("POST", url, data=body, headers=headers)
            if reply.status < 400:
                return reply
            problem = _problem(reply)
            if problem.get("type") == ERROR_NS + "badNonce" and attempt < NONCE_RETRIES:
                self.bad_nonce_retries += 1
                log.debug("acme: badNonce, retrying %s", url)
                continue
            raise _problem_error(problem, reply.status)
        raise AssertionError("unreachable")

    # objects

    async def register(self, contact: str | None = None) -> str:
        directory = await self.get_directory()
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if contact:
            payload["contact"] = [contact if ":" in contact else f"mailto:{contact}"]
        reply = await self.post(directory["newAccount"], payload, use_jwk=True)
        kid = reply.headers.get("Location")
        if not kid:
            raise AcmeError("The certificate authority did not return an account address.")
        self.kid = kid
        return kid

    async def new_order(self, domains: list[str]) -> tuple[str, dict[str, Any]]:
        directory = await self.get_directory()
        payload = {"identifiers": [{"type": "dns", "value": d} for d in domains]}
        reply = await self.post(directory["newOrder"], payload)
        location = reply.headers.get("Location")
        if not location:
            raise AcmeError("The certificate authority did not return an order address.")
        return location, reply.json()

    async def get(self, url: str) -> dict[str, Any]:
        return (await self.post(url, None)).json()

    async def _poll(self, url: str, done: set[str], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        delay = self.poll_interval
        while True:
            reply = await self.post(url, None)
            obj = reply.json()
            if obj.get("status") in done:
                return obj
            if time.monotonic() > deadline:
                raise AcmeError(f"The certificate authority took too long to check {what}; "
                                "Textbridge will try again later.")
            await asyncio.sleep(_retry_after(reply, delay))
            delay = min(delay * 1.5, 10.0)

    async def authorize(self, authz_url: str, challenges: ChallengeStore) -> None:
        authz = await self.get(authz_url)
        domain = str(authz.get("identifier", {}).get("value", "?"))
        if authz.get("status") == "valid":
            return
        if authz.get("status") != "pending":
            raise AcmeError(f"The certificate authority will not check {domain} right now "
                            f"(its authorization is {authz.get('status')}); try again later.")
        challenge = next((c for c in authz.get("challenges", []) if c.get("type") == "http-01"),
                         None)
        if challenge is None:
            raise AcmeError(f"The certificate authority offers no way for Textbridge to prove "
                            f"it runs {domain} (no HTTP-01 challenge).")
        token = str(challenge["token"])
        challenges.add(token, self.account.key_authorization(token))
        try:
            await self.post(str(challenge["url"]), {})
            result = await self._poll(authz_url, {"valid", "invalid", "deactivated", "expired",
                                                  "revoked"}, domain)
        finally:
            challenges.remove(token)
        if result.get("status") != "valid":
            failed = next((c for c in result.get("challenges", [])
                           if c.get("token") == token), challenge)
            raise _challenge_error(domain, token, failed.get("error") or {})

    async def finalize(self, order_url: str, order: dict[str, Any], csr_der: bytes) -> str:
        if order.get("status") == "pending":
            order = await self._poll(order_url, {"ready", "valid", "invalid"}, "the order")
        if order.get("status") == "ready":
            reply = await self.post(str(order["finalize"]), {"csr": b64u(csr_der)})
            order = reply.json()
        if order.get("status") not in ("valid", "invalid"):
            order = await self._poll(order_url, {"valid", "invalid"}, "the order")
        if order.get("status") != "valid" or not order.get("certificate"):
            error = order.get("error") or {}
            raise AcmeError("The certificate authority did not issue the certificate: "
                            f"{error.get('detail', 'no reason given')}.", error)
        reply = await self.post(str(order["certificate"]), None,
                                accept="application/pem-certificate-chain")
        return reply.body.decode("ascii", errors="replace")


def _retry_after(reply: _Reply, default: float) -> float:
    value = reply.headers.get("Retry-After", "")
    try:
        return max(0.1, min(float(value), 60.0))
    except ValueError:
        return default


def _problem(reply: _Reply) -> dict[str, Any]:
    try:
        value = json.loads(reply.body)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {"type": "", "detail": reply.body[:200].decode("utf-8", errors="replace")}


def _problem_error(problem: Mapping[str, Any], status: int) -> AcmeError:
    kind = str(problem.get("type", "")).removeprefix(ERROR_NS)
    detail = str(problem.get("detail", "")).strip() or f"HTTP {status}"
    messages = {
        "rateLimited": "The certificate authority has issued too many certificates for this "
                       f"domain recently; Textbridge will try again later ({detail}).",
        "rejectedIdentifier": "The certificate authority will not issue a certificate for "
                              f"this name: {detail}. Check the domain you entered.",
        "unsupportedIdentifier": "The certificate authority will not issue a certificate "
                                 f"for this name: {detail}. Check the domain you entered.",
        "invalidContact": "The certificate authority refused the e-mail address: "
                          f"{detail}. Check it or leave it empty.",
        "unsupportedContact": "The certificate authority refused the e-mail address: "
                              f"{detail}. Check it or leave it empty.",
        "externalAccountRequired": "This certificate authority needs a separate account "
                                   "(external account binding), which Textbridge does not "
                                   "support; use Let's Encrypt.",
        "userActionRequired": "The certificate authority needs you to accept new terms first: "
                              f"{detail}.",
        "serverInternal": f"The certificate authority has a problem of its own ({detail}); "
                          "Textbridge will try again later.",
    }
    message = messages.get(kind, f"The certificate authority refused the request: {detail}.")
    return AcmeError(message, problem)


def _challenge_error(domain: str, token: str, problem: Mapping[str, Any]) -> AcmeError:
    kind = str(problem.get("type", "")).removeprefix(ERROR_NS)
    detail = str(problem.get("detail", "")).strip() or "no reason given"
    url = f"http://{domain}{CHALLENGE_PREFIX}{token}"
    forward = "check that port 80 of your router forwards to Textbridge"
    if kind == "dns":
        message = (f"The certificate authority could not find {domain} in DNS: check that "
                   f"the domain points to your home's public address ({detail}).")
    elif kind in ("connection", "tls"):
        message = (f"The certificate authority could not reach {url}: {forward} "
                   f"({detail}).")
    elif kind in ("unauthorized", "incorrectResponse"):
        message = (f"The certificate authority reached {url} but did not get Textbridge's "
                   f"answer: {forward}, not to another device ({detail}).")
    elif kind == "caa":
        message = (f"The domain {domain} has a CAA record that does not allow this "
                   f"certificate authority ({detail}).")
    else:
        message = (f"The certificate authority could not confirm that {domain} leads to "
                   f"Textbridge: {forward} ({detail}).")
    return AcmeError(message, problem)


# -- certificates ---------------------------------------------------------------------------


def make_csr(domains: list[str], key: ec.EllipticCurvePrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder()
    if len(domains[0]) <= 64:
        builder = builder.subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
        )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _check_chain(chain_pem: str, domains: list[str], key: ec.EllipticCurvePrivateKey) -> None:
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise AcmeError("The certificate authority sent a certificate Textbridge cannot "
                        "read.") from exc
    if not certs:
        raise AcmeError("The certificate authority sent no certificate.")
    leaf = certs[0]
    if leaf.public_key() != key.public_key():
        raise AcmeError("The certificate authority sent a certificate for another key.")
    names = set(_dns_names(leaf))
    missing = [d for d in domains if d not in names]
    if missing:
        raise AcmeError(f"The certificate authority left out {', '.join(missing)}.")


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in ext.value.get_values_for_type(x509.DNSName)]


def _normalize(domains: list[str]) -> list[str]:
    result: list[str] = []
    for domain in domains:
        name = domain.strip().rstrip(".").lower()
        if not name:
            continue
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise AcmeError(f"{domain!r} is not a valid domain name.") from exc
        if name not in result:
            result.append(name)
    if not result:
        raise AcmeError("No domain name was given.")
    return result


async def obtain_certificate(
    directory_url: str,
    domains: list[str],
    *,
    account_key_path: Path,
    cert_path: Path,
    key_path: Path,
    challenges: ChallengeStore,
    contact: str | None = None,
    ssl: SslArg = None,
    poll_interval: float = 1.0,
    poll_timeout: float = 300.0,
    session: aiohttp.ClientSession | None = None,
) -> None:
    """Get a certificate for `domains` and save the chain (leaf first) to `cert_path` and its
    new key to `key_path` (both 0600, atomically; the key first, see `needs_renewal`).

    The account key at `account_key_path` is made on first use and reused afterwards.
    `challenges` must be served on port 80 of every domain (`add_routes`).
    """
    names = _normalize(domains)
    account = await asyncio.to_thread(AccountKey.load_or_create, account_key_path)
    own_session = session is None
    http = session or aiohttp.ClientSession()
    try:
        client = AcmeClient(http, directory_url, account, ssl=ssl,
                            poll_interval=poll_interval, timeout=poll_timeout)
        await client.register(contact)
        order_url, order = await client.new_order(names)
        for authz_url in order.get("authorizations", []):
            await client.authorize(str(authz_url), challenges)
        cert_key = ec.generate_private_key(ec.SECP256R1())
        chain = await client.finalize(order_url, order, make_csr(names, cert_key))
    finally:
        if own_session:
            await http.close()
    _check_chain(chain, names, cert_key)
    await asyncio.to_thread(write_private, key_path, _pem_key(cert_key))
    await asyncio.to_thread(write_private, cert_path, chain.encode("ascii"))
    log.info("acme: certificate for %s saved", ", ".join(names))


def needs_renewal(
    cert_path: Path,
    days: int = RENEW_BEFORE_DAYS,
    *,
    domains: list[str] | None = None,
    key_path: Path | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """True when the certificate is missing, unreadable, expires within `days`, lacks one of
    `domains`, or does not belong to the key at `key_path` (a power cut between writing the
    key and the certificate)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (FileNotFoundError, ValueError):
        return True
    moment = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc - dt.timedelta(days=days) <= moment:
        return True
    if domains is not None:
        names = set(_dns_names(cert))
        if any(d not in names for d in _normalize(domains)):
            return True
    if key_path is not None:
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (FileNotFoundError, ValueError):
            return True
        if key.public_key() != cert.public_key():
            return True
    return False
