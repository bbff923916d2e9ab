"""Domain times (float epoch seconds, ISO-8601 strings) -> google.protobuf.Timestamp.

Split into whole seconds and nanoseconds before scaling: multiplying an epoch
float by 1e9 would round away the sub-microsecond digits the float has.
"""

from __future__ import annotations

import math
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(seconds: float) -> Timestamp:
    """Epoch seconds -> Timestamp, to the nearest nanosecond."""
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return Timestamp(seconds=int(whole), nanos=int(nanos))


def timestamp_from_iso(value: str) -> Timestamp:
    """ISO-8601 time with an offset (as profiles store it) -> Timestamp."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    result = Timestamp()
    result.FromDatetime(moment)
    return result
