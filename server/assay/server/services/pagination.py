"""AIP-158 pagination for the List RPCs: page sizes, opaque page tokens, keyed pages.

A page token is base64url(JSON) holding the sort key of the last item served
and a digest of the request's filter (RPC name included). Continuing *after a
key* rather than at an offset keeps pages stable while items are added or
deleted between calls; the digest turns a token reused with another filter
into INVALID_ARGUMENT instead of a silently wrong page. Tokens are opaque to
clients: only this module reads or writes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from assay.server.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE = 100
"""Items per page when the request's page_size is 0."""

MAX_PAGE_SIZE = 1000
"""Larger page sizes are served as this many (AIP-158: coerce, do not fail)."""

Key = tuple[str | int | float, ...]
"""Sort key of one item: strings and numbers only, so that it survives JSON."""

T = TypeVar("T")

_BAD_TOKEN = "page_token is not a token this server issued; pass next_page_token unchanged"

MAX_TOKEN_CHARS = 2048
"""Longer than any token this server issues (keys are names of at most 128 characters)."""


@dataclass(frozen=True)
class PageRequest:
    """A validated page request: how many items, and after which key."""

    size: int
    after: Key | None
    """Sort key of the last item of the previous page; None for the first page."""
    digest: str
    """Digest of the filter the token must carry."""

    def token_after(self, last: Key) -> str:
        """The next_page_token for a page that ended with the item keyed ``last``."""
        document = {"after": list(last), "filter": self.digest}
        raw = json.dumps(document, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _digest(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _decode(token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgumentError(_BAD_TOKEN)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw)
    # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting is a RecursionError.
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(_BAD_TOKEN) from exc
    if not isinstance(document, dict):
        raise InvalidArgumentError(_BAD_TOKEN)
    return document


def page_request(page_size: int, page_token: str, filters: Mapping[str, Any]) -> PageRequest:
    """Validate a List request's paging fields against its filter.

    Args:
        page_size: The request's page_size (0 = DEFAULT_PAGE_SIZE, capped at MAX_PAGE_SIZE).
        page_token: The request's page_token ("" for the first page).
        filters: Everything that selects the items (include the RPC name), JSON-able.

    Raises:
        InvalidArgumentError: page_size is negative, or the token is malformed
            or was issued for another filter.
    """
    if page_size < 0:
        raise InvalidArgumentError(f"page_size must be >= 0, got {page_size}")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    digest = _digest(filters)
    if not page_token:
        return PageRequest(size, None, digest)
    document = _decode(page_token)
    after = document.get("after")
    if not isinstance(after, list) or not after:
        raise InvalidArgumentError(_BAD_TOKEN)
    if not all(isinstance(v, str | int | float) for v in after):
        raise InvalidArgumentError(_BAD_TOKEN)
    if document.get("filter") != digest:
        raise InvalidArgumentError(
            "page_token was issued for a different filter; repeat the first call's filter "
            "or start again without a page_token"
        )
    return PageRequest(size, tuple(after), digest)


def check_key_types(after: Key, *types: type | tuple[type, ...]) -> Key:
    """``after`` when its values have ``types`` in order, else INVALID_ARGUMENT."""
    if len(after) != len(types) or not all(
        isinstance(v, t) and not isinstance(v, bool) for v, t in zip(after, types, strict=True)
    ):
        raise InvalidArgumentError(_BAD_TOKEN)
    return after


class ListRequest(Protocol):
    """The paging fields every List RPC request carries."""

    @property
    def page_size(self) -> int:
        """At most this many items (0: the default)."""
        ...

    @property
    def page_token(self) -> str:
        """The previous page's next_page_token ("" for the first page)."""
        ...


def page_of(
    request: ListRequest,
    filters: Mapping[str, Any],
    items: Sequence[T],
    key: Callable[[T], tuple[str, ...]],
) -> tuple[list[T], str]:
    """The page a List RPC asked for, and the next page's token (see `paginate`).

    ``filters`` names the RPC and its filter fields; a token only continues
    the listing it came from.
    """
    return paginate(items, key, page_request(request.page_size, request.page_token, filters))


def paginate(
    items: Sequence[T], key: Callable[[T], tuple[str, ...]], request: PageRequest
) -> tuple[list[T], str]:
    """One page of ``items`` in ascending ``key`` order, and the next page's token.

    Keys are strings, so a token from another List RPC (whose digest would
    differ anyway) can never make the comparison fail.
    """
    ordered = sorted(items, key=key)
    if request.after is not None:
        after = check_key_types(request.after, *([str] * len(request.after)))
        ordered = [item for item in ordered if key(item) > after]
    if len(ordered) > request.size:
        page = ordered[: request.size]
        return page, request.token_after(key(page[-1]))
    return list(ordered), ""
