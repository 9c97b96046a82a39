"""Throwaway TLS material for the security tests, generated at test time (never committed).

    certs = make_certs(tmp_dir, key_password="...")

writes PEM files into `tmp_dir` and returns their paths:

- ``ca``: the CA the tests trust, and ``other_ca``: one nobody uses to sign brokers (so a client
  trusting only it sees an untrusted broker certificate);
- ``broker_keystore``: the broker's key and certificate (SAN 127.0.0.1 and localhost) in one PEM
  file, the shape Kafka's ``ssl.keystore.type=PEM`` with ``ssl.keystore.location`` reads;
- ``wrong_host_keystore``: the same for a certificate signed by the CA but naming only
  ``WRONG_HOST``, for the hostname-verification tests;
- ``client_cert`` and ``client_key``: the client's certificate and its private key, encrypted
  with `key_password`, for mutual TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

WRONG_HOST = "wrong-host.klag.invalid"


@dataclass(frozen=True)
class Certs:
    ca: Path
    other_ca: Path
    broker_keystore: Path
    wrong_host_keystore: Path
    client_cert: Path
    client_key: Path
    key_password: str


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are generated in microseconds, RSA ones in tens of milliseconds.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool,
          sans: Optional[List[x509.GeneralName]] = None,
          usage: Optional[List[x509.ObjectIdentifier]] = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pkcs8(key, password: Optional[str] = None) -> bytes:
    # Kafka's PEM keystore reads PKCS#8 keys only (plain or encrypted PKCS#8 PEM headers).
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_certs(directory: Path, key_password: str) -> Certs:
    """Generate a CA, broker, wrong-host and client certificates into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("klag test CA")
    ca = _cert("klag test CA", ca_key, ca_name, ca_key, ca=True)
    other_key = _key()
    other_name = _name("klag untrusted CA")
    other = _cert("klag untrusted CA", other_key, other_name, other_key, ca=True)

    server = [ExtendedKeyUsageOID.SERVER_AUTH]
    broker_key = _key()
    broker = _cert("127.0.0.1", broker_key, ca_name, ca_key, ca=False, usage=server, sans=[
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    wrong_key = _key()
    wrong = _cert(WRONG_HOST, wrong_key, ca_name, ca_key, ca=False, usage=server,
                  sans=[x509.DNSName(WRONG_HOST)])
    client_key = _key()
    client = _cert("klag-client", client_key, ca_name, ca_key, ca=False,
                   usage=[ExtendedKeyUsageOID.CLIENT_AUTH])

    return Certs(
        ca=_write(directory / "ca.pem", _pem(ca)),
        other_ca=_write(directory / "other-ca.pem", _pem(other)),
        broker_keystore=_write(directory / "broker.pem",
                               _pkcs8(broker_key) + _pem(broker) + _pem(ca)),
        wrong_host_keystore=_write(directory / "wrong-host.pem",
                                   _pkcs8(wrong_key) + _pem(wrong) + _pem(ca)),
        client_cert=_write(directory / "client.pem", _pem(client)),
        client_key=_write(directory / "client.key", _pkcs8(client_key, key_password)),
        key_password=key_password,
    )
