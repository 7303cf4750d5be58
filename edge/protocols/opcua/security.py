"""The OPC-UA production profile: hashed user passwords, a client trust list, the server
certificate.

Invariants:

* No anonymous login and no built-in admin: every session needs a user from the users
  list whose password matches its scrypt/PBKDF2 hash. Hashes are parsed once at start-up.
* ``get_user`` is called synchronously on the event loop by asyncua, and a key
  derivation costs tens of ms. So a successful check is remembered per process (an HMAC
  of the password under a random per-process key, compared in constant time), and failed
  ones are rate-limited per client (``throttle``): a client is its peer address and
  its channel certificate's thumbprint, so a client guessing passwords locks out itself,
  never another client's correct login. Attempts inside a client's wait are refused
  without hashing; the hashing spent on clients with failures on record is capped across
  all of them, and the table of clients is bounded (entries expire, a cap on entries).
* asyncua does not give ``get_user`` the session: ``HashedUserManager.install`` wraps
  ``decrypt_user_token``, which ActivateSession calls with the session just before
  ``get_user`` in the same synchronous call, and takes the peer address from there.
* A client certificate is trusted when it is byte-identical to a certificate in the
  trust folder, or is directly issued by a CA certificate there; it must be inside its
  validity period. The folder is re-read when its modification time changes, so an
  operator can trust a client without restarting. The channel's certificate is checked
  again at login, so a client cannot skip the check by leaving it out of CreateSession.
* The server certificate and key are generated on first start (in a 0700 folder, the key
  written 0600 from the start, see ``edge.runtime.private``) and reused afterwards; the
  application URI is in the certificate, as clients require.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import secrets
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge.errors import ConfigError
from edge.protocols.opcua.throttle import LoginThrottle
from edge.runtime.private import file_mode, narrow, private_dir, write_private

log = structlog.get_logger("edge.opcua")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
PBKDF2_ITERATIONS = 600_000
# Below these a stolen hash is cheap to crack (OWASP password storage, 2023): scrypt's
# cost N*r*p at least that of N=2**15, r=8, p=1; PBKDF2-HMAC-SHA256 600,000 iterations.
MIN_SCRYPT_COST = 2**15 * 8 * 1
MIN_PBKDF2_ITERATIONS = 600_000
_REHASH = "make a new hash with: python -m edge.protocols.opcua.security hash"


class WeakHashError(ValueError):
    """A well-formed hash whose parameters are below the minimum."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``scrypt$n$r$p$salt$hash`` or ``pbkdf2_sha256$iterations$salt$hash``."""

    scheme: str
    params: tuple[int, ...]
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        parts = text.strip().split("$")
        try:
            if parts[0] == "scrypt" and len(parts) == 6:
                n, r, p = (int(x) for x in parts[1:4])
                if n < 2 or n & (n - 1) or r < 1 or p < 1:
                    raise ValueError("bad scrypt parameters")
                if n * r * p < MIN_SCRYPT_COST:
                    raise WeakHashError(
                        f"scrypt parameters N={n}, r={r}, p={p} are too weak: N*r*p must be "
                        f"at least {MIN_SCRYPT_COST} (N=32768, r=8, p=1); {_REHASH}")
                return cls("scrypt", (n, r, p), _b64d(parts[4]), _b64d(parts[5]))
            if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
                iterations = int(parts[1])
                if iterations < MIN_PBKDF2_ITERATIONS:
                    raise WeakHashError(
                        f"pbkdf2_sha256 with {iterations} iterations is too weak: at least "
                        f"{MIN_PBKDF2_ITERATIONS} are needed; {_REHASH}")
                return cls("pbkdf2_sha256", (iterations,), _b64d(parts[2]), _b64d(parts[3]))
        except WeakHashError:
            raise
        except (ValueError, TypeError) as exc:
            raise ValueError(f"password hash is malformed ({exc})") from None
        raise ValueError(
            "password hash must be 'scrypt$N$r$p$salt$hash' or "
            "'pbkdf2_sha256$iterations$salt$hash' (make one with: "
            "python -m edge.protocols.opcua.security hash)"
        )

    def derive(self, password: str) -> bytes:
        secret = password.encode("utf-8")
        if self.scheme == "scrypt":
            n, r, p = self.params
            return hashlib.scrypt(
                secret, salt=self.salt, n=n, r=r, p=p, maxmem=_scrypt_maxmem(n, r, p),
                dklen=len(self.digest),
            )
        return hashlib.pbkdf2_hmac(
            "sha256", secret, self.salt, self.params[0], dklen=len(self.digest)
        )

    def verify(self, password: str) -> bool:
        return hmac.compare_digest(self.derive(password), self.digest)


def _scrypt_maxmem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + 2**20  # what OpenSSL needs, with room to spare


def _b64d(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def hash_password(password: str, *, scheme: str = "scrypt") -> str:
    """A new salted hash of ``password`` in the format ``PasswordHash.parse`` reads."""
    salt = secrets.token_bytes(16)
    b64 = base64.b64encode
    if scheme == "scrypt":
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32,
            maxmem=_scrypt_maxmem(SCRYPT_N, SCRYPT_R, SCRYPT_P),
        )
        return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
                f"{b64(salt).decode()}${b64(digest).decode()}")
    if scheme == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"
    raise ValueError(f"unknown password hash scheme {scheme!r}")


def load_users(owner: str, inline: Iterable[tuple[str, str]], users_file: str,
               users_secret: str, secrets: Callable[[str], str]) -> dict[str, PasswordHash]:
    """The users of a server (OPC-UA, the web page): inline ``(name, hash)`` pairs, then a
    file and a secret of ``user:hash`` lines. ConfigError naming ``owner`` and the key."""
    try:
        users = {name: PasswordHash.parse(digest) for name, digest in inline}
        if users_file:
            path = Path(users_file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{owner}: users_file: cannot read {path}: "
                                  f"{exc.strerror or exc}") from None
            users.update(parse_users(text, str(path)))
        if users_secret:
            users.update(parse_users(secrets(users_secret), f"secret {users_secret}"))
    except ValueError as exc:
        raise ConfigError(f"{owner}: users: {exc}") from None
    return users


def users_file_problems(owner: str, users_file: str) -> list[str]:
    """check-config: a users file's lines and hash strengths (a secret is read at start-up
    only). A file this user may not read is left to start-up, where the daemon reads it."""
    if not users_file:
        return []
    path = Path(users_file)
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{owner}: users_file: cannot read {path}: {exc}"]
    try:
        parse_users(text, str(path))
    except ValueError as exc:
        return [f"{owner}: users_file: {exc}"]
    return []


def parse_users(text: str, where: str) -> dict[str, PasswordHash]:
    """``user:hash`` lines (blank lines and ``#`` comments allowed) -> users."""
    users: dict[str, PasswordHash] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, digest = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"{where}: line {lineno}: expected 'user:hash'")
        try:
            users[name.strip()] = PasswordHash.parse(digest)
        except ValueError as exc:
            raise ValueError(f"{where}: line {lineno}: user '{name.strip()}': {exc}") from None
    return users


class TrustList:
    """Client certificates trusted by the server: a folder of DER or PEM files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._stamp: int | None = None
        self._exact: set[bytes] = set()
        self._cas: list[x509.Certificate] = []

    def _reload(self) -> None:
        try:
            stamp = self.folder.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = -1
        if stamp == self._stamp:
            return
        self._stamp = stamp
        exact: set[bytes] = set()
        cas: list[x509.Certificate] = []
        for path in sorted(self.folder.glob("*")) if stamp != -1 else ():
            if path.suffix.lower() not in (".der", ".pem", ".crt", ".cer"):
                continue
            try:
                data = path.read_bytes()
                cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                        else x509.load_der_x509_certificate(data))
            except (OSError, ValueError) as exc:
                log.warning("opcua trust list: certificate unreadable, skipped",
                            file=str(path), error=str(exc))
                continue
            exact.add(cert.public_bytes(Encoding.DER))
            try:
                if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                    cas.append(cert)
            except x509.ExtensionNotFound:
                pass
        self._exact, self._cas = exact, cas
        log.info("opcua trust list loaded", folder=str(self.folder), certificates=len(exact))

    def is_trusted(self, cert: x509.Certificate) -> bool:
        self._reload()
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return False
        if cert.public_bytes(Encoding.DER) in self._exact:
            return True
        for ca in self._cas:
            if ca.subject == cert.issuer:
                try:
                    cert.verify_directly_issued_by(ca)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return True
        return False

    async def validate(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        """asyncua certificate validator: raises BadCertificateUntrusted when not trusted."""
        if not self.is_trusted(cert):
            log.warning("opcua client certificate refused: not in the trust list",
                        subject=cert.subject.rfc4514_string(), application=app.ApplicationUri,
                        trust_dir=str(self.folder))
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


class HashedUserManager:
    """asyncua user manager: hashed passwords, trusted channel certificate, no admin."""

    def __init__(
        self, users: dict[str, PasswordHash], trust: TrustList | None,
        *, fail_interval_s: float = 0.5, throttle: LoginThrottle | None = None,
    ) -> None:
        self._users = users
        self._trust = trust
        self._throttle = throttle or LoginThrottle(fail_interval_s)
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._peer: str | None = None

    def install(self, iserver: Any) -> None:
        """Make this the server's user manager, and learn each session's peer address
        (see the module docstring)."""
        decrypt = iserver.decrypt_user_token

        def decrypt_user_token(isession: Any, token: Any) -> tuple[str, str]:
            name = getattr(isession, "name", None)
            self._peer = str(name[0]) if isinstance(name, tuple) and name else None
            try:
                result: tuple[str, str] = decrypt(isession, token)
            except BaseException:
                self._peer = None
                raise
            return result

        iserver.decrypt_user_token = decrypt_user_token
        iserver.user_manager = self

    def _mac(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\0{password}".encode(), "sha256").digest()

    def check(self, name: str, password: str, client: tuple[str, str] = ("?", "")) -> bool:
        known = self._users.get(name)
        mac = self._mac(name, password)
        cached = self._verified.get(name)
        if cached is not None and hmac.compare_digest(cached, mac):
            self._throttle.succeeded(client)
            return True
        if not self._throttle.allow(client):
            return False  # inside its wait: refused without hashing, the wait unchanged
        if known is None:
            self._throttle.failed(client)
            return False
        if known.verify(password):
            self._verified[name] = mac
            self._throttle.succeeded(client)
            return True
        self._throttle.failed(client)
        return False

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        peer, self._peer = self._peer or "?", None
        thumbprint = ""
        if self._trust is not None:
            if not certificate:
                log.warning("opcua login refused: no client certificate on the channel",
                            peer=peer)
                return None
            cert = (certificate if isinstance(certificate, x509.Certificate)
                    else x509.load_der_x509_certificate(bytes(certificate)))
            if not self._trust.is_trusted(cert):
                log.warning("opcua login refused: channel certificate not trusted",
                            subject=cert.subject.rfc4514_string(), peer=peer)
                return None
            thumbprint = cert.fingerprint(hashes.SHA1()).hex()
        if not username or password is None or not self.check(
            username, password, (peer, thumbprint)
        ):
            log.warning("opcua login refused: wrong user name or password", user=username,
                        peer=peer)
            return None
        log.info("opcua login", user=username, peer=peer)
        return User(role=UserRole.User, name=username)


async def ensure_server_certificate(
    folder: Path, app_uri: str, cert_file: Path | None = None, key_file: Path | None = None
) -> tuple[Path, Path]:
    """The server certificate (DER) and key (PEM), generated on first start."""
    private_dir(folder)
    cert_path = cert_file or folder / "server_cert.der"
    key_path = key_file or folder / "server_key.pem"
    fresh = not key_path.exists() or not cert_path.exists()
    if not key_path.is_file():  # asyncua would write it with the umask's mode
        write_private(key_path, cert_gen.dump_private_key_as_pem(cert_gen.generate_private_key()))
    host = socket.gethostname()
    await cert_gen.setup_self_signed_certificate(
        key_path, cert_path, app_uri, host,
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        {"countryName": "DE", "organizationName": "edge-gateway", "localityName": host},
    )
    os.chmod(key_path, 0o600)
    narrow(cert_path, file_mode(cert_path.parent))
    if fresh:
        log.info("opcua server certificate generated", cert=str(cert_path), key=str(key_path),
                 application_uri=app_uri)
    return cert_path, key_path


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.protocols.opcua.security hash [--pbkdf2]``: print a password hash."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "hash":
        print("usage: python -m edge.protocols.opcua.security hash [--pbkdf2]", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("empty password refused", file=sys.stderr)
        return 1
    print(hash_password(password, scheme="pbkdf2_sha256" if "--pbkdf2" in args else "scrypt"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
