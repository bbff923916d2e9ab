"""Resource names that key stored profiles, validated here once before anything is stored.

A stored profile is keyed by (kind, name, version). The name and version come
from requests (ListProfiles, DeleteProfile) or from the model registry, so each
must be a plain name: never a path (the legacy on-disk layout, and anything
that exports profiles to files, builds paths from them: an absolute path,
``..``, a separator, NUL or a trailing newline would reach outside a folder),
and short enough to log. The rule is the model registry's own, so every
registrable model can have a profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from assay.server.errors import InvalidArgumentError

MAX_NAME_LENGTH: Final = 128
NAME_RULE: Final = (
    f"1-{MAX_NAME_LENGTH} characters, letters, digits, '.', '_' and '-' only, "
    "starting with a letter or digit"
)
_NAME: Final = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")
_SHOWN: Final = 40
"""At most this many characters of a rejected name go into the error message."""


def _shown(value: object) -> str:
    if not isinstance(value, str):
        return f"of type {type(value).__name__}"
    return repr(value[:_SHOWN]) + ("..." if len(value) > _SHOWN else "")


def check_name(value: object, what: str) -> str:
    """``value`` if it is a valid resource name.

    Args:
        value: The candidate name (from a request or a model entry).
        what: What it names, for the message (e.g. "model name").

    Raises:
        InvalidArgumentError: Saying what is allowed; long input is truncated.
    """
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise InvalidArgumentError(f"{what} {_shown(value)} is not valid: use {NAME_RULE}")
    return value


@dataclass(frozen=True)
class ProfileKey:
    """Which stored profile: its kind, and the name and version it belongs to.

    Build it with `ProfileKey.of`, which validates every part; the store reads
    and writes through keys only.
    """

    kind: str
    name: str
    version: str

    @classmethod
    def of(cls, kind: str, name: object, version: object, owner: str = "model") -> ProfileKey:
        """A validated key; ``owner`` names the thing profiled in messages.

        Raises:
            InvalidArgumentError: A part is not a valid resource name.
        """
        return cls(
            check_name(kind, "profile kind"),
            check_name(name, f"{owner} name"),
            check_name(version, f"{owner} version"),
        )
