"""Certificates made on the fly for tests of mutual TLS: a CA, a worker certificate for localhost / 127.0.0.1 and
a client certificate, written as PEM files (what `openssl` makes in docs/remote-security.md)."""

import dataclasses
import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclasses.dataclass(frozen=True)
class Pki:
    """The PEM files of one CA and the two certificates it signed."""

    ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, key, issuer, issuer_key, *, ca=False, usage=None, names=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: pathlib.Path, certificate=None, key=None) -> pathlib.Path:
    if certificate is not None:
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def make_pki(directory: pathlib.Path, name: str = 'test') -> Pki:
    """A CA `name`, a worker certificate for localhost and 127.0.0.1, and a client certificate, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate(f'{name} CA', ca_key, f'{name} CA', ca_key, ca=True)
    server = _certificate('worker', server_key, f'{name} CA', ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                          names=[x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))])
    client = _certificate('fedlab', client_key, f'{name} CA', ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca=_write(directory / f'{name}-ca.pem', ca),
        server_cert=_write(directory / f'{name}-worker.pem', server),
        server_key=_write(directory / f'{name}-worker.key', key=server_key),
        client_cert=_write(directory / f'{name}-client.pem', client),
        client_key=_write(directory / f'{name}-client.key', key=client_key),
    )
