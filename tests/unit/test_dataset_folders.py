"""The uploads root's layout: versions behind links, replace, prune, delete, sweep, confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assay.server.dataset_folders import STAGING, VERSIONS, Staged, SweepReport, UploadsFolder
from assay.server.datasets import DatasetRoots
from assay.server.errors import FailedPreconditionError, PermissionDeniedError


def stage(folder: UploadsFolder, files: dict[str, bytes]) -> Staged:
    staged = folder.stage()
    for relative, data in files.items():
        (staged.path / relative).parent.mkdir(parents=True, exist_ok=True)
        (staged.path / relative).write_bytes(data)
    return staged


def publish(folder: UploadsFolder, name: str, files: dict[str, bytes], replace: bool = True) -> str:
    staged = stage(folder, files)
    folder.publish(name, staged, replace)
    staged.release()
    return staged.version


def contents(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def hidden_leftovers(root: Path) -> list[str]:
    staging = root / STAGING
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def test_replace_switches_the_link_and_prune_removes_the_old_version(tmp_path: Path) -> None:
    folder = UploadsFolder(tmp_path)
    first = publish(folder, "d", {"a/1.png": b"old", "a/2.png": b"old2"}, replace=False)
    assert os.readlink(tmp_path / "d") == os.path.join(VERSIONS, "d", first), "a relative link"
    second = publish(folder, "d", {"b/1.png": b"new"})
    assert folder.current("d") == second and contents(tmp_path / "d") == {"b/1.png": b"new"}
    assert folder.prune("d") == 1
    assert sorted(p.name for p in (tmp_path / VERSIONS / "d").iterdir()) == [second]
    assert hidden_leftovers(tmp_path) == [] and folder.names() == ["d"]


def test_create_without_replace_refuses_a_taken_name_and_keeps_nothing(tmp_path: Path) -> None:
    folder = UploadsFolder(tmp_path)
    publish(folder, "d", {"x.png": b"1"}, replace=False)
    staged = stage(folder, {"y.png": b"2"})
    with pytest.raises(FailedPreconditionError, match="already exists"):
        folder.publish("d", staged, replace=False)
    staged.discard()
    assert contents(tmp_path / "d") == {"x.png": b"1"}
    assert len(list((tmp_path / VERSIONS / "d").iterdir())) == 1
    assert hidden_leftovers(tmp_path) == []


def test_remove_makes_the_dataset_disappear_and_deletes_its_files(tmp_path: Path) -> None:
    folder = UploadsFolder(tmp_path)
    publish(folder, "d", {"x.png": b"1"})
    assert folder.remove("d") and not folder.exists("d")
    assert not (tmp_path / VERSIONS / "d").exists() and hidden_leftovers(tmp_path) == []
    assert not folder.remove("d")


def test_sweep_removes_dead_staging_and_unlinked_versions_but_not_live_uploads(
    tmp_path: Path,
) -> None:
    folder = UploadsFolder(tmp_path)
    current = publish(folder, "d", {"x.png": b"1"})
    dead = stage(folder, {"half.png": b"h"})
    os.close(dead.fd)  # as if its process died: the lock is gone
    live = stage(folder, {"live.png": b"l"})
    stray = tmp_path / VERSIONS / "d" / "0000-stray"  # renamed in, never linked (killed)
    stray.mkdir()
    (tmp_path / ".link-0000").symlink_to(os.path.join(VERSIONS, "d", current))
    report = folder.sweep()
    assert report == SweepReport(staging=1, versions=1, links=1, adopted=0)
    assert live.path.exists(), "a live upload's staging survives"
    assert sorted(p.name for p in (tmp_path / VERSIONS / "d").iterdir()) == [current]
    assert contents(tmp_path / "d") == {"x.png": b"1"}
    live.discard()
    assert hidden_leftovers(tmp_path) == []


def test_sweep_links_a_first_upload_cut_short_and_drops_a_dangling_link(tmp_path: Path) -> None:
    folder = UploadsFolder(tmp_path)
    version = publish(folder, "d", {"x.png": b"1"})
    (tmp_path / "d").unlink()  # killed between the rename into versions and the link
    (tmp_path / "gone").symlink_to(os.path.join(VERSIONS, "gone", "v"))  # a delete cut short
    report = folder.sweep()
    assert report.adopted == 1 and report.links == 1
    assert folder.current("d") == version and not os.path.lexists(tmp_path / "gone")


def test_a_folder_from_before_versions_is_adopted(tmp_path: Path) -> None:
    (tmp_path / "old" / "cat").mkdir(parents=True)
    (tmp_path / "old" / "cat" / "1.png").write_bytes(b"legacy")
    folder = UploadsFolder(tmp_path)
    folder.sweep()
    assert (tmp_path / "old").is_symlink() and folder.current("old") is not None
    assert contents(tmp_path / "old") == {"cat/1.png": b"legacy"}
    publish(folder, "old", {"cat/2.png": b"new"})
    assert contents(tmp_path / "old") == {"cat/2.png": b"new"}


def test_roots_resolve_the_link_inside_the_uploads_root_and_refuse_escapes(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    folder = UploadsFolder(uploads)
    publish(folder, "d", {"cat/1.png": b"x"})
    roots = DatasetRoots([uploads])
    resolved = roots.check(uploads / "d")
    assert resolved.is_relative_to(uploads.resolve() / VERSIONS)
    outside = tmp_path / "outside"
    outside.mkdir()
    (uploads / "evil").symlink_to(outside)
    with pytest.raises(PermissionDeniedError):
        roots.check(uploads / "evil")
    (uploads / VERSIONS / "d" / "escape").symlink_to(outside)  # a version link that escapes
    with pytest.raises(PermissionDeniedError):
        roots.check(uploads / VERSIONS / "d" / "escape")
