"""Fitted state bound to a model version, shared by every capability.

* :mod:`~assay.server.profiles.fingerprint`: the hash of a model's outputs on a
  fixed probe that binds a profile to the weights it was fitted on.
* :mod:`~assay.server.profiles.names`: the resource names that key stored
  profiles, validated once, before anything is stored or read.
* :mod:`~assay.server.profiles.store`: profiles as rows of the server's store
  (one row per profile: document and arrays together), cached by etag and
  refreshed in the background, parameterised by a profile kind's
  `ProfileFormat` (OOD profiles and detector profiles use it).
* :mod:`~assay.server.profiles.legacy`: the on-disk layout of servers before
  the store, imported once at start.
"""

from assay.server.profiles.fingerprint import array_digest, fingerprint
from assay.server.profiles.names import NAME_RULE, ProfileKey, check_name
from assay.server.profiles.store import (
    ProfileFormat,
    ProfileStore,
    Stored,
    UnreadableProfileError,
)

__all__ = [
    "NAME_RULE",
    "ProfileFormat",
    "ProfileKey",
    "ProfileStore",
    "Stored",
    "UnreadableProfileError",
    "array_digest",
    "check_name",
    "fingerprint",
]
