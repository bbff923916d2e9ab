"""AIP-158 page requests and keyed pages (services/pagination.py)."""

import base64
import json

import pytest

from assay.server.errors import InvalidArgumentError
from assay.server.services.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    check_key_types,
    page_request,
    paginate,
)

ITEMS = [(name, version) for name in ("b", "a", "c") for version in ("2", "1")]


def _walk(
    items: list[tuple[str, str]], size: int, filters: dict[str, str]
) -> list[list[tuple[str, str]]]:
    pages, token = [], ""
    while True:
        page, token = paginate(items, lambda i: i, page_request(size, token, filters))
        pages.append(page)
        if not token:
            return pages


def test_page_size_zero_is_the_default_and_large_ones_are_capped() -> None:
    assert page_request(0, "", {}).size == DEFAULT_PAGE_SIZE
    assert page_request(7, "", {}).size == 7
    assert page_request(MAX_PAGE_SIZE + 1, "", {}).size == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgumentError, match="page_size must be >= 0"):
        page_request(-1, "", {})


def test_walking_pages_yields_every_item_once_in_key_order() -> None:
    pages = _walk(ITEMS, 4, {"rpc": "X"})
    assert [len(p) for p in pages] == [4, 2]
    assert [item for page in pages for item in page] == sorted(ITEMS)
    assert _walk(ITEMS, 6, {"rpc": "X"}) == [sorted(ITEMS)]  # exactly full: no empty last page
    assert _walk([], 3, {"rpc": "X"}) == [[]]


def test_pages_continue_after_the_last_key_when_items_change_between_calls() -> None:
    first, token = paginate(ITEMS, lambda i: i, page_request(2, "", {}))
    assert first == [("a", "1"), ("a", "2")]
    changed = [i for i in ITEMS if i != ("a", "2")] + [("a", "0"), ("b", "15")]
    second, _ = paginate(changed, lambda i: i, page_request(2, token, {}))
    assert second == [("b", "1"), ("b", "15")]  # neither repeats nor skips the old items


def test_a_token_is_bound_to_its_filter() -> None:
    _, token = paginate(
        ITEMS, lambda i: i, page_request(2, "", {"rpc": "ListProfiles", "model": "a"})
    )
    page_request(2, token, {"model": "a", "rpc": "ListProfiles"})  # key order does not matter
    for other in (
        {"rpc": "ListProfiles", "model": "b"},
        {"rpc": "ListDetectorProfiles", "model": "a"},
    ):
        with pytest.raises(InvalidArgumentError, match="different filter"):
            page_request(2, token, other)


def _forge(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "%%%",
        "eA",  # "x": not JSON
        _forge([1, 2]),
        _forge({"filter": "0"}),
        _forge({"after": [], "filter": "0"}),
        _forge({"after": [{"a": 1}], "filter": "0"}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[" * 1500).decode(),  # nesting deep enough to recurse
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # and over the size limit
        _forge({"after": ["x" * 3000], "filter": "0"}),
    ],
)
def test_malformed_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgumentError, match="not a token this server issued"):
        page_request(2, token, {})


def test_a_key_of_the_wrong_types_is_refused() -> None:
    request = page_request(2, "", {})
    forged = page_request(2, request.token_after((1.5, "id")), {})
    assert check_key_types(forged.after or (), (int, float), str) == (1.5, "id")
    with pytest.raises(InvalidArgumentError):
        check_key_types(forged.after or (), str, str)
    with pytest.raises(InvalidArgumentError):
        paginate(ITEMS, lambda i: i, forged)  # string keys only
    with pytest.raises(InvalidArgumentError):
        check_key_types((True, "id"), (int, float), str)  # JSON true is not a time
