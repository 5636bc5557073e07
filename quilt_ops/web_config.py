"""``exporter --web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

The same file node_exporter and blackbox_exporter take::

    tls_server_config:
      cert_file: server.crt        # relative to the web config file's folder
      key_file: server.key
      min_version: TLS12           # optional: TLS12 (the default) or TLS13
    basic_auth_users:
      prometheus: $2y$10$...       # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\n')

A key the toolkit knows but quilt-ops does not do (client certificates, cipher
lists, HTTP headers) is refused by name rather than ignored, so a file never
seems to give a protection it does not. The file is read once, at start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

OPTION = "--web.config.file"
TLS_KEYS = {"cert_file", "key_file", "min_version"}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
#: Checked once and remembered (bcrypt is slow on purpose), at most this many at a time.
CACHE_SIZE = 256
REALM = "quilt-ops exporter"


@dataclass(frozen=True)
class WebConfig:
    """What the web config file asks for; no TLS and no users when empty."""

    cert_file: str = ""
    key_file: str = ""
    min_version: str = "TLS12"
    users: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return bool(self.cert_file)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (None without TLS); `ConfigError` when the pair cannot be loaded."""
        if not self.tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = TLS_VERSIONS[self.min_version]
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as e:
            reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or type(e).__name__
            raise ConfigError(
                f"{OPTION}: cannot load the certificate {self.cert_file} and key {self.key_file}: {reason}"
            ) from None
        return context


def parse(doc: Any, folder: str) -> WebConfig:
    """The web config from the file's YAML document (pure; paths relative to ``folder``)."""
    if doc is None:
        return WebConfig()
    if not isinstance(doc, dict):
        raise ConfigError(f"{OPTION}: the file must hold a mapping, not {type(doc).__name__}")
    unknown = sorted(set(doc) - {"tls_server_config", "basic_auth_users"})
    if unknown:
        raise ConfigError(f"{OPTION}: {', '.join(map(str, unknown))} is not supported by quilt-ops")
    cert, key, version = _tls(doc.get("tls_server_config") or {})
    hashes = _users(doc.get("basic_auth_users") or {})

    def path(name: str) -> str:
        return name if not name or os.path.isabs(name) else os.path.join(folder, name)

    return WebConfig(path(cert), path(key), version, hashes)


def _tls(tls: Any) -> tuple[str, str, str]:
    """``tls_server_config``: the certificate and key file names and the lowest TLS version."""
    if not isinstance(tls, dict):
        raise ConfigError(f"{OPTION}: tls_server_config must be a mapping")
    unknown = sorted(set(tls) - TLS_KEYS)
    if unknown:
        raise ConfigError(f"{OPTION}: tls_server_config.{unknown[0]} is not supported by quilt-ops")
    cert, key = tls.get("cert_file") or "", tls.get("key_file") or ""
    if not isinstance(cert, str) or not isinstance(key, str) or bool(cert) != bool(key):
        raise ConfigError(f"{OPTION}: tls_server_config needs both cert_file and key_file (file names)")
    version = tls.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        raise ConfigError(f"{OPTION}: tls_server_config.min_version must be TLS12 or TLS13, not {version!r}")
    return cert, key, version


def _users(users: Any) -> dict[str, bytes]:
    """``basic_auth_users``: user name to bcrypt hash."""
    if not isinstance(users, dict):
        raise ConfigError(f"{OPTION}: basic_auth_users must map user names to bcrypt hashes")
    hashes: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(f"{OPTION}: basic_auth_users: {user!r} is not a user name")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
            # never the value itself: it may be a password put there by mistake
            raise ConfigError(f"{OPTION}: basic_auth_users.{user} must be a bcrypt hash ($2y$...)")
        hashes[user] = hashed.encode()

    return hashes


def load(file: str) -> WebConfig:
    """Reads and checks the web config file; `ConfigError` naming what is wrong."""
    import yaml  # type: ignore[import-untyped]

    try:
        with open(file, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{OPTION}: cannot read {file}: {e.strerror or type(e).__name__}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{OPTION}: {file} is not valid YAML{where}") from None
    config = parse(doc, os.path.dirname(os.path.abspath(file)))
    config.ssl_context()  # a pair that cannot be loaded is an error at start, not at the first scrape
    return config


def credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of an ``Authorization: Basic`` header (None: absent or malformed)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class BasicAuth:
    """Checks ``Authorization`` headers against the bcrypt hashes.

    A user and password found good is remembered by a keyed digest (never the
    password itself), so that scrapes do not each pay for bcrypt; an unknown user
    costs the same bcrypt check as a known one.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        import bcrypt

        self.users = dict(users)
        self._bcrypt = bcrypt
        self._key = secrets.token_bytes(32)
        self._good: set[bytes] = set()
        self._lock = threading.Lock()
        self._dummy = bcrypt.hashpw(b"quilt-ops", bcrypt.gensalt(rounds=10))

    def allows(self, header: str | None) -> bool:
        found = credentials(header)
        if found is None:
            return False
        user, password = found
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if digest in self._good:
                return True
        hashed = self.users.get(user)
        try:
            ok = self._bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:  # bcrypt takes at most 72 bytes: no such password was ever hashed
            ok = False
        if ok:
            with self._lock:
                if len(self._good) >= CACHE_SIZE:
                    self._good.clear()
                self._good.add(digest)
        return ok
