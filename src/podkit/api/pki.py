"""The certificates of `podkit serve`: a CA, the server's and the admin client's, made with
`cryptography` on first start and kept under `<state>/serve/pki/` (keys 0600).

As kubeadm and k3s make them: the server certificate names 127.0.0.1, localhost and the
listen address (kubectl checks the IP SAN) with serverAuth; the client certificate is
CN=admin, O=system:masters (the apiserver reads CN as the user and O as the groups), with
clientAuth. EC P-256 keys: a few milliseconds each to make.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3650


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def client_key(self) -> Path:
        return self.dir / "admin.key"


def ensure(pki_dir: Path, hosts: list[str]) -> Pki:
    """The PKI in pki_dir, made if missing; a server certificate that does not name every one
    of `hosts` (a new --listen address) is made again with the same CA."""
    pki = Pki(pki_dir)
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not pki.ca.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podkit-ca")])
        ca_cert = (
            _builder(name, name, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(pki_dir / "ca.key", ca_key)
        pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        for stale in (pki.server_cert, pki.client_cert):
            stale.unlink(missing_ok=True)
    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    loaded = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    wanted = sorted({"127.0.0.1", "localhost", *hosts})
    if not pki.server_cert.exists() or _names(pki.server_cert) != wanted:
        _issue(pki.server_cert, pki.server_key, ca_cert, loaded, "podkit-apiserver", [], wanted)
    if not pki.client_cert.exists():
        _issue(pki.client_cert, pki.client_key, ca_cert, loaded, "admin", ["system:masters"], [])
    return pki


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _usage(cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    orgs: list[str],
    hosts: list[str],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    subject = x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    server = bool(hosts)
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _names(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return sorted([*ips, *san.get_values_for_type(x509.DNSName)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
