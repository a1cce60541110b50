"""Pebble (Let's Encrypt's test CA, Debian's `pebble`) on loopback for the ACME tests.

Pebble really validates HTTP-01: it resolves the names through a tiny DNS responder run
here (every name -> 127.0.0.1) and fetches /.well-known/acme-challenge/{token} on the port
given as its `httpPort`, where the test serves the challenges. Pebble also rejects 5% of
good nonces, so badNonce retries happen for real.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

needs_pebble = pytest.mark.skipif(
    shutil.which("pebble") is None,
    reason="Debian's pebble (the ACME test server) is not installed: "
           "apt-get install pebble, or scripts/install-deps test",
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DnsResponder:
    """Answers every A query with 127.0.0.1 and every other query with no records."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._answer(query)
            if reply:
                self.sock.sendto(reply, peer)

    @staticmethod
    def _answer(query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        end = 12
        while end < len(query) and query[end] != 0:
            end += query[end] + 1
        end += 5  # the root label, QTYPE, QCLASS
        if end > len(query):
            return None
        question = query[12:end]
        qtype = struct.unpack("!H", query[end - 4:end - 2])[0]
        answers = b""
        if qtype == 1:
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if answers else 0, 0, 0)
        return header + question + answers

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.sock.close()


@dataclass
class Pebble:
    directory: str
    ca_file: Path  # what pebble's own HTTPS is checked with
    management: str
    http_port: int
    ssl: ssl.SSLContext


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "pebble.crt", directory / "pebble.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pebble exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("pebble did not start listening")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    directory = tmp_path_factory.mktemp("pebble")
    cert_path, key_path = _self_signed(directory)
    acme_port, mgmt_port, http_port, tls_port = (free_port() for _ in range(4))
    config = directory / "pebble.json"
    config.write_text(
        '{"pebble": {'
        f'"listenAddress": "127.0.0.1:{acme_port}",'
        f'"managementListenAddress": "127.0.0.1:{mgmt_port}",'
        f'"certificate": "{cert_path}", "privateKey": "{key_path}",'
        f'"httpPort": {http_port}, "tlsPort": {tls_port},'
        '"ocspResponderURL": "", "externalAccountBindingRequired": false}}'
    )
    dns = DnsResponder()
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_VA_ALWAYS_VALID="0",
               PEBBLE_WFE_NONCEREJECT="5", PEBBLE_AUTHZREUSE="0")
    log_path = directory / "pebble.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns.port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory,
        )
    try:
        _wait_for_port(acme_port, proc, time.monotonic() + 20)
        _wait_for_port(mgmt_port, proc, time.monotonic() + 5)
        context = ssl.create_default_context(cafile=str(cert_path))
        yield Pebble(
            directory=f"https://localhost:{acme_port}/dir",
            ca_file=cert_path,
            management=f"https://localhost:{mgmt_port}",
            http_port=http_port,
            ssl=context,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        dns.close()
