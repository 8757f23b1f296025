"""A small certificate authority for the broker's TLS listener, with ``cryptography``.

Devices authenticate with a client certificate whose CN is the device id; Mosquitto's
``use_identity_as_username`` then makes the CN the MQTT username, so the same ACL applies
as with passwords. Keys are EC P-256 (fast to make, supported by every TLS stack on an
edge box). Files are PEM; private keys are written mode 0600 and never printed.

Re-running keeps what is still good: a certificate is reissued only when it is missing,
unreadable, not signed by this CA, for another name, or expires within
:data:`RENEW_BEFORE`.

A rotated certificate (``--rotate``: the device was lost, stolen or its key leaked) is
also revoked: the CA's ``crl.pem`` lists every certificate revoked so far, signed by the
CA, and the TLS listener reads it (``crlfile``), so the old certificate no longer opens a
connection once the broker has restarted. The list is only ever added to; one that is
unreadable or not signed by this CA is an error, never silently replaced (that would
let every revoked certificate in again).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import GatewayError

CA_DAYS = 3650
LEAF_DAYS = 730
RENEW_BEFORE = dt.timedelta(days=30)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate a device clock slightly behind ours
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")

Action = Literal["created", "kept", "updated", "rotated", "renewed"]
"""What happened to one file: made new, left as it was, rewritten with new content,
replaced on request (``--rotate``), or a certificate reissued because it was no good."""


class ProvisionError(GatewayError):
    """Credentials or certificates could not be written or used."""


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically; the file has ``mode`` from its creation,
    so a private key or password is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def sync_file(path: Path, data: bytes, mode: int) -> Action:
    """Write ``data`` to ``path`` unless it already holds exactly that (then fix its mode)."""
    try:
        if path.read_bytes() == data:
            path.chmod(mode)
            return "kept"
        existed = True
    except FileNotFoundError:
        existed = False
    write_file(path, data, mode)
    return "updated" if existed else "created"


def check_server_name(name: str) -> str:
    """``name`` if it is an IP address or a DNS name, else ``ValueError``."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        if not _DNS_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is neither an IP address nor a DNS name") from None
    return name


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's certificate and key, loaded or made under ``directory``."""

    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    def issued(self, cert_path: Path) -> x509.Certificate | None:
        """The certificate in ``cert_path`` if this CA signed it (else None)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            cert.verify_directly_issued_by(self.cert)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return None
        return cert

    def sync_crl(
        self, revoke: Iterable[x509.Certificate] = (), *, now: dt.datetime | None = None
    ) -> Action:
        """Write ``crl.pem``: what it listed, plus ``revoke``; kept as it was if nothing is
        new. Raises :class:`ProvisionError` for a list this CA cannot vouch for."""
        now = now or dt.datetime.now(dt.UTC)
        listed: dict[int, dt.datetime] = {}
        number = 0
        exists = self.crl_path.exists()
        if exists:
            crl = self._load_crl()
            listed = {entry.serial_number: entry.revocation_date_utc for entry in crl}
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        new = {cert.serial_number for cert in revoke} - set(listed)
        if exists and not new:
            return "kept"
        listed.update(dict.fromkeys(new, now))
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(self.cert.not_valid_after_utc)  # an expired list refuses everyone
            .add_extension(x509.CRLNumber(number + 1), critical=False)
        )
        for serial, when in sorted(listed.items()):
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self.key, hashes.SHA256())
        write_file(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return "updated" if exists else "created"

    def _load_crl(self) -> x509.CertificateRevocationList:
        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
            number = crl.extensions.get_extension_for_class(x509.CRLNumber)
        except (OSError, ValueError, x509.ExtensionNotFound):
            number = None
        if number is None or not crl.is_signature_valid(self.key.public_key()):
            raise ProvisionError(
                f"the revocation list {self.crl_path} is unreadable or not this CA's; "
                "restore it (replacing it would un-revoke every certificate it lists)"
            )
        return crl

    @classmethod
    def load_or_create(
        cls, directory: Path, *, now: dt.datetime | None = None
    ) -> tuple[CertificateAuthority, Action]:
        """The CA in ``directory`` (``ca.crt``, ``ca.key``), made if neither file exists.

        A half-present or expired CA is an error, never silently replaced: a new CA would
        lock out every device holding a certificate from the old one.
        """
        now = now or dt.datetime.now(dt.UTC)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if not cert_path.exists() and not key_path.exists():
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postedge CA")])
            builder = _builder(name, name, key.public_key(), now, CA_DAYS)
            cert = (
                builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_key_usage(cert_sign=True), critical=True)
                .sign(key, hashes.SHA256())
            )
            write_file(key_path, _key_pem(key), 0o600)
            write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            return cls(directory, cert, key), "created"
        loaded, loaded_key = _load_pair(cert_path, key_path)
        if loaded is None or loaded_key is None or not _is_ca(loaded):
            raise ProvisionError(
                f"the CA in {directory} is incomplete or unreadable (need ca.crt and ca.key, "
                "EC, matching); restore it, or move the directory away to make a new CA"
            )
        if loaded.not_valid_after_utc <= now:
            raise ProvisionError(f"the CA certificate {cert_path} has expired")
        return cls(directory, loaded, loaded_key), "kept"

    def issue(
        self,
        cert_path: Path,
        key_path: Path,
        common_name: str,
        *,
        server_names: tuple[str, ...] = (),
        force: bool = False,
        now: dt.datetime | None = None,
    ) -> Action:
        """Make ``cert_path``/``key_path`` a certificate for ``common_name`` from this CA.

        With ``server_names`` it is a server certificate valid for those names (SAN);
        without, a client certificate. Kept if still good, unless ``force`` (rotation).
        """
        now = now or dt.datetime.now(dt.UTC)
        exists = cert_path.exists() or key_path.exists()
        if exists and not force and self._still_good(cert_path, key_path, common_name,
                                                     server_names, now):  # fmt: skip
            key_path.chmod(0o600)
            return "kept"
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = _builder(subject, self.cert.subject, key.public_key(), now, LEAF_DAYS)
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(_key_usage(cert_sign=False), critical=True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
            critical=False,
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        write_file(key_path, _key_pem(key), 0o600)
        write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        if force and exists:
            return "rotated"
        return "renewed" if exists else "created"

    def _still_good(
        self,
        cert_path: Path,
        key_path: Path,
        common_name: str,
        server_names: tuple[str, ...],
        now: dt.datetime,
    ) -> bool:
        cert, key = _load_pair(cert_path, key_path)
        if cert is None or key is None:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - RENEW_BEFORE:
            return False
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [attribute.value for attribute in names] != [common_name]:
            return False
        return _san_names(cert) == set(server_names)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _san_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    dns = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    return set(dns) | {str(ip) for ip in ips}


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_pair(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate | None, ec.EllipticCurvePrivateKey | None]:
    """The certificate and its EC key, or Nones if either is missing, unreadable or the
    two do not belong together."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None, None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None, None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    if key.public_key().public_bytes(pem, spki) != cert.public_key().public_bytes(pem, spki):
        return None, None
    return cert, key
