"""Throwaway certificate authorities for TLS tests, made with the ``openssl`` command.

The ``cryptography`` package is not a dependency of postedge, and every edge box and test
machine has the ``openssl`` command, so the test CAs are made with it. Keys are EC P-256:
generated in milliseconds, where RSA keys would take a noticeable part of a test.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

_DAYS = "2"
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (both PEM files)."""

    cert: Path
    key: Path

    @property
    def pair(self) -> tuple[Path, Path]:
        """``(cert, key)``, as a device link takes it."""
        return self.cert, self.key


@dataclass(frozen=True)
class CertAuthority:
    """A self-signed CA that issues server and client certificates into ``directory``."""

    name: str
    directory: Path
    cert: Path
    key: Path

    def server(self, name: str = "broker") -> Issued:
        """A server certificate valid for ``localhost`` and ``127.0.0.1``."""
        return self._issue(
            name,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )

    def client(self, common_name: str) -> Issued:
        """A client certificate whose CN (the broker's username with
        ``use_identity_as_username``) is ``common_name``."""
        return self._issue(common_name, "extendedKeyUsage=clientAuth\n")

    def _issue(self, common_name: str, extensions: str) -> Issued:
        stem = self.directory / f"{self.name}-{common_name}"
        key, csr = stem.with_suffix(".key"), stem.with_suffix(".csr")
        cert, ext = stem.with_suffix(".crt"), stem.with_suffix(".ext")
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions
        )
        _openssl(
            "req", "-new", *_EC_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}"
        )
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-set_serial", str(secrets.randbits(63)), "-days", _DAYS,
            "-extfile", ext, "-out", cert,
        )  # fmt: skip
        return Issued(cert, key)


def make_ca(directory: Path, name: str) -> CertAuthority:
    """A new CA called ``name`` whose files live in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", key, "-out", cert, "-days", _DAYS,
        "-subj", f"/CN=postedge test CA {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return CertAuthority(name, directory, cert, key)


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")
