"""The data folder is created and proved writable first, or start-up stops with one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assay.server.datadir import DataDirError, ensure_data_dir
from assay.server.settings import load_settings


def test_creates_the_folder_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    assert ensure_data_dir(load_settings(data={"dir": str(folder)}).data) == folder
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_an_impossible_folder_names_itself_and_the_setting(tmp_path: Path) -> None:
    (blocker := tmp_path / "file").write_text("not a folder")  # root cannot mkdir under it either
    settings = load_settings(data={"dir": str(blocker / "assay")})
    with pytest.raises(DataDirError) as info:
        ensure_data_dir(settings.data)
    (line,) = str(info.value).splitlines()
    assert f"cannot write the data folder {blocker / 'assay'} (data.dir)" in line
    assert "set ASSAY_DATA__DIR (data.dir) to a writable folder" in line
    assert "SQLite store unless ASSAY_DATA__URL" in line


def test_the_default_folder_says_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("ASSAY_")]:
        monkeypatch.delenv(var)
    (blocker := tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    settings = load_settings(data={"url": "postgresql://assay@db:5432/assay"})
    with pytest.raises(DataDirError) as info:
        ensure_data_dir(settings.data)
    (line,) = str(info.value).splitlines()
    assert f"{blocker / 'assay'} (data.dir is unset, so it defaults to" in line
    assert line.endswith("to a writable folder (uploads)")  # the store is elsewhere
