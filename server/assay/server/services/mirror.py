"""Building a message from the domain record whose fields it mirrors.

Most response messages repeat a domain record's fields under the same names
(a crop's box, a variant's decision, a job's counters). `mirrored` copies
those by name, so a converter spells out only what differs: nested
messages, enums, timestamps. A record attribute of the wrong type for its
message field (a string for a number, a float for a Timestamp) makes
protobuf raise, so a record and its message cannot drift apart silently
past the first test that converts one.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def mirrored(message_type: type[M], record: object, **fields: Any) -> M:
    """A ``message_type`` from ``record``'s same-named attributes; ``fields`` replace or add.

    Message fields the record has no attribute for are left unset unless given
    in ``fields``; record attributes the message has no field for are ignored.
    """
    names = message_type.DESCRIPTOR.fields_by_name
    copied = {name: getattr(record, name) for name in names if hasattr(record, name)}
    return message_type(**{**copied, **fields})
