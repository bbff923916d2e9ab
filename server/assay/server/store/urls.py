"""``data.url`` parsing: which engine, where, and the URL with its password hidden.

Two forms are accepted: ``sqlite:///ABSOLUTE/PATH`` and
``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?OPTIONS]`` (``postgres://`` too,
as libpq accepts both). A PostgreSQL URL is handed to libpq unchanged, so every
libpq option works; only what is logged or shown is redacted.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from assay.server.errors import ConfigError

EXAMPLES = "sqlite:///var/lib/assay/assay.sqlite3 or postgresql://assay@db.internal:5432/assay"
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_PASSWORD_OPTION = re.compile(r"(?i)(password=)[^&]*")


@dataclasses.dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed ``data.url``.

    Attributes:
        engine: "sqlite" or "postgresql".
        raw: The URL as given (may hold a password: never log it).
        redacted: The URL with any password replaced by ``***``.
        path: The SQLite file; None for PostgreSQL.
    """

    engine: str
    raw: str
    redacted: str
    path: Path | None = None


def parse(url: str) -> StoreUrl:
    """Parses a store URL.

    Raises:
        ConfigError: Neither a ``sqlite:///`` URL with an absolute path nor a
            PostgreSQL URL; the message gives examples.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return StoreUrl("sqlite", url, url, _sqlite_path(url))
    if scheme in _POSTGRES_SCHEMES:
        parts = urlsplit(url)
        if not parts.netloc and not parts.query:
            raise ConfigError(
                f"data.url {redact(url)!r} names no PostgreSQL server; e.g. {EXAMPLES}"
            )
        return StoreUrl("postgresql", url, redact(url))
    raise ConfigError(
        f"data.url {redact(url)!r} is not a store URL: use sqlite:///ABSOLUTE/PATH or "
        f"postgresql://USER@HOST:PORT/DATABASE, e.g. {EXAMPLES}"
    )


def _sqlite_path(url: str) -> Path:
    parts = urlsplit(url)
    # SQLAlchemy writes sqlite:////abs/path: take it too, as the same absolute path.
    path = Path("/" + parts.path.lstrip("/")) if parts.path.startswith("/") else Path(parts.path)
    if parts.netloc or parts.query or parts.fragment or not path.is_absolute():
        raise ConfigError(
            f"data.url {url!r}: an SQLite URL is sqlite:/// followed by an absolute "
            "path (three slashes, then the path's own leading slash), e.g. "
            "sqlite:///var/lib/assay/assay.sqlite3"
        )
    return path


def redact(url: str) -> str:
    """The URL with the password (in the user part or a ``password=`` option) hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = _PASSWORD_OPTION.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # Nothing hidden; urlunsplit would drop an empty "//" authority.
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
