"""The uploads root's layout: versions behind links, replace, prune, delete, sweep, confinement."""

from __future__ import annotations

import os
import threading
import time
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


def test_prune_keeps_versions_in_use_and_waits_for_the_switch_to_settle(tmp_path: Path) -> None:
    folder = UploadsFolder(tmp_path)
    first = publish(folder, "d", {"x.png": b"1"})
    second = publish(folder, "d", {"x.png": b"2"})
    third = publish(folder, "d", {"x.png": b"3"})
    assert folder.prune("d", settle_s=60) == 0, "switched just now: a Start may have pinned one"
    assert folder.prune("d", keep={first}) == 1, "a live job reads the first version"
    assert sorted(p.name for p in (tmp_path / VERSIONS / "d").iterdir()) == [first, third]
    switched = folder.switched_at("d")
    assert switched is not None and abs(switched - time.time()) < 60
    assert folder.prune_all({}) == 1 and folder.current("d") == third
    assert second not in os.listdir(tmp_path / VERSIONS / "d")
    report = folder.sweep(keep=None)  # which versions are in use is unknown: keep them all
    assert report.versions == 0


def test_a_failed_switch_removes_the_new_version_so_no_sweep_shows_it(tmp_path: Path) -> None:
    folder = UploadsFolder(tmp_path)
    staged = stage(folder, {"x.png": b"1"})
    (tmp_path / f".link-{staged.version}").mkdir()  # symlink(2) onto it fails: EEXIST
    with pytest.raises(FileExistsError):
        folder.publish("d", staged, replace=True)
    staged.release()
    (tmp_path / f".link-{staged.version}").rmdir()
    assert not folder.exists("d") and not list((tmp_path / VERSIONS / "d").iterdir())
    assert folder.sweep().adopted == 0 and not folder.exists("d")


def test_release_from_two_threads_closes_the_lock_once(tmp_path: Path) -> None:
    """A publish and a discard may release together; a second close could hit a reused fd."""
    folder = UploadsFolder(tmp_path)
    errors: list[BaseException] = []
    for _ in range(200):
        staged = folder.stage()
        gate = threading.Barrier(3)

        def release(staged: Staged = staged, gate: threading.Barrier = gate) -> None:
            gate.wait()
            try:
                staged.release()
            except BaseException as exc:  # handed to the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=release) for _ in range(2)]
        for thread in threads:
            thread.start()
        gate.wait()
        for thread in threads:
            thread.join()
        other = os.open(tmp_path / "probe", os.O_CREAT | os.O_RDWR)  # reuses the lowest fd
        staged.release()
        os.fstat(other)  # still open: nobody closed it as the lock's fd
        os.close(other)
        staged.discard()
    assert errors == []
