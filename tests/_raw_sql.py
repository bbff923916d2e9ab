"""Raw SQL against a store's database, behind the store's back (for tests that tamper or peek)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg

from assay.server.store.urls import parse


def raw(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Runs one statement (``?`` placeholders) on its own connection and commits it."""
    path = parse(url).path
    if path is not None:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
        finally:
            conn.close()
        return rows
    with psycopg.connect(url, autocommit=True) as pg:
        cursor = pg.execute(sql.replace("?", "%s").encode(), params)
        return cursor.fetchall() if cursor.description else []
