"""The appliance's own certificate authority, so Element X can reach it over HTTPS at home.

No public CA will certify `textbridge.local` or 192.168.x.y, and Element X refuses plain
HTTP, so the appliance makes a root certificate once, each family phone trusts it once (an
install page per platform), and the appliance issues its own server certificate from it.

The root carries name constraints: even if its key leaked, it could only vouch for the
server's own name, `.local` names and private addresses, never for a bank's website. Keys
are EC P-256 (fast on a Pi, accepted by Android and iOS) and stored 0600.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import plistlib
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.web.files import write_private

CA_VALIDITY = dt.timedelta(days=3650)
# Apple refuses TLS certificates valid for more than 825 days even from a private root;
# a year keeps well inside that and renewal is automatic.
SERVER_VALIDITY = dt.timedelta(days=397)
RENEW_BEFORE = dt.timedelta(days=30)
PRIVATE_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    fingerprint_sha256: str  # colon-separated hex, as phones show it
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC key")
    return key


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


class CertificateAuthority:
    def __init__(self, directory: Path, server_name: str) -> None:
        self.directory = directory
        self.server_name = server_name.lower()

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert_path(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key_path(self) -> Path:
        return self.directory / "server.key"

    def exists(self) -> bool:
        return self.ca_cert_path.exists() and self.ca_key_path.exists()

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())

    def server_certificate(self) -> x509.Certificate | None:
        try:
            return x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())
        except FileNotFoundError:
            return None

    def ensure(
        self, hostnames: tuple[str, ...] = (), ips: tuple[str, ...] = ()
    ) -> bool:
        """Make the root if missing and (re)issue the server certificate when it is missing,
        near expiry or lacks a requested name. Returns True when a new one was issued."""
        if not self.exists() or not self._root_permits(self.server_name):
            # A root made before the server name was known (the web service starts before
            # the homeserver on first boot) cannot vouch for it: replace it. Phones can only
            # have installed it after setup, by which time the name is fixed.
            self._make_root()
        names = self._names(hostnames)
        addresses = [ipaddress.ip_address(ip) for ip in ips]
        current = self.server_certificate()
        if current is not None and not self._needs_renewal(current, names, addresses):
            return False
        self._issue_server(names, addresses)
        return True

    def _root_permits(self, name: str) -> bool:
        try:
            nc = self.ca_certificate().extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound:
            return True
        for sub in nc.value.permitted_subtrees or []:
            if isinstance(sub, x509.DNSName):
                base = sub.value.lower().lstrip(".")
                if name == base or name.endswith("." + base):
                    return True
        return False

    def _names(self, hostnames: tuple[str, ...]) -> list[str]:
        names = [self.server_name]
        for name in hostnames:
            if name.lower() not in names:
                names.append(name.lower())
        return names

    def _needs_renewal(
        self, cert: x509.Certificate, names: list[str], ips: list[IPAddress]
    ) -> bool:
        if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            return True
        if cert.issuer != self.ca_certificate().subject:
            return True
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have_names = set(san.get_values_for_type(x509.DNSName))
        have_ips = set(san.get_values_for_type(x509.IPAddress))
        return not (set(names) <= have_names and set(ips) <= have_ips)

    def _constraints(self) -> x509.NameConstraints:
        permitted: list[x509.GeneralName] = [x509.DNSName("local")]
        if not self.server_name.endswith(".local") and self.server_name != "local":
            permitted.insert(0, x509.DNSName(self.server_name))
        permitted += [x509.IPAddress(ipaddress.ip_network(n)) for n in PRIVATE_NETWORKS]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)

    def _make_root(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        tail = hashlib.sha256(self.server_name.encode()).hexdigest()[:8]
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Textbridge appliance"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Textbridge home CA {tail}"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(self._constraints(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        # The key first: a certificate without its key would be a root nobody can use.
        write_private(self.ca_key_path, _key_bytes(key))
        write_private(
            self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644
        )

    def _issue_server(self, names: list[str], ips: list[IPAddress]) -> None:
        ca_key = _load_key(self.ca_key_path)
        ca_cert = self.ca_certificate()
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        san += [x509.IPAddress(ip) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        write_private(self.server_key_path, _key_bytes(key))
        # The chain (leaf then root) is what a TLS server must present.
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.ca_cert_path.read_bytes()
        write_private(self.server_cert_path, chain, mode=0o644)

    def ca_der(self) -> bytes:
        return self.ca_certificate().public_bytes(serialization.Encoding.DER)

    def ca_pem(self) -> bytes:
        return self.ca_certificate().public_bytes(serialization.Encoding.PEM)

    def info(self) -> CertificateInfo:
        cert = self.ca_certificate()
        return CertificateInfo(
            subject=cert.subject.rfc4514_string(),
            fingerprint_sha256=fingerprint(cert),
            not_after=cert.not_valid_after_utc,
        )

    def mobileconfig(self) -> bytes:
        """An iOS configuration profile with one com.apple.security.root payload. The UUIDs
        derive from the root's fingerprint, so downloading it twice gives the same profile
        and iOS replaces rather than duplicates it."""
        der = self.ca_der()
        fp = hashlib.sha256(der).hexdigest()
        base = uuid.uuid5(uuid.NAMESPACE_URL, f"textbridge-ca:{fp}")
        payload_uuid = uuid.uuid5(base, "root")
        profile = {
            "PayloadContent": [
                {
                    "PayloadCertificateFileName": "textbridge-ca.cer",
                    "PayloadContent": der,
                    "PayloadDescription": "Lets this device trust your Textbridge at home.",
                    "PayloadDisplayName": "Textbridge home CA",
                    "PayloadIdentifier": f"local.textbridge.ca.{fp[:16]}",
                    "PayloadType": "com.apple.security.root",
                    "PayloadUUID": str(payload_uuid).upper(),
                    "PayloadVersion": 1,
                }
            ],
            "PayloadDescription": (
                f"Trust the Textbridge appliance {self.server_name} so the Element X app can "
                "connect securely at home."
            ),
            "PayloadDisplayName": f"Textbridge ({self.server_name})",
            "PayloadIdentifier": f"local.textbridge.profile.{fp[:16]}",
            "PayloadOrganization": "Textbridge appliance",
            "PayloadRemovalDisallowed": False,
            "PayloadType": "Configuration",
            "PayloadUUID": str(base).upper(),
            "PayloadVersion": 1,
        }
        return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
