"""Fitted state bound to a model version, shared by every capability.

* :mod:`~assay.server.profiles.fingerprint`: the hash of a model's outputs on a
  fixed probe that binds a profile to the weights it was fitted on.
* :mod:`~assay.server.profiles.names`: the resource names that key stored
  profiles, validated once, before any path is built.
* :mod:`~assay.server.profiles.store`: one versioned on-disk store
  (``<root>/<name>/<version>/<stem>.{json,npz}``), parameterised by a
  profile kind's `ProfileFormat` (OOD profiles and detector profiles use it).
"""

from assay.server.profiles.fingerprint import array_digest, fingerprint
from assay.server.profiles.names import NAME_RULE, ProfileKey, check_name
from assay.server.profiles.store import ProfileFormat, ProfileStore

__all__ = [
    "NAME_RULE",
    "ProfileFormat",
    "ProfileKey",
    "ProfileStore",
    "array_digest",
    "check_name",
    "fingerprint",
]
