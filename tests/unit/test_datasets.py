import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assay.server.datasets import DatasetRoots, label_indices, load_rgb
from assay.server.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError


def write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5, 3), value, np.uint8)).save(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for label, count in (("cat", 3), ("dog", 2)):
        for i in range(count):
            write_png(tmp_path / "folder" / label / f"{i}.png", i)
    (tmp_path / "folder" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder(root: Path) -> None:
    dataset = DatasetRoots([root]).open(root / "folder")
    assert [s.label for s in dataset.samples] == ["cat"] * 3 + ["dog"] * 2
    assert dataset.labels == ("cat", "dog") and not dataset.has_groups
    np.testing.assert_array_equal(label_indices(dataset, ["dog", "cat", "cow"]), [1, 1, 1, 0, 0])


def test_jsonl_and_csv_manifests_with_groups(root: Path) -> None:
    rows = [
        {"path": "folder/cat/0.png", "label": "cat", "group": "indoor"},
        {"path": str(root / "folder/dog/1.png"), "label": "dog", "group": "outdoor"},
    ]
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "m.csv").write_text(
        "path,label,group\nfolder/cat/0.png,cat,indoor\nfolder/dog/1.png,dog,outdoor\n"
    )
    roots = DatasetRoots([root])
    for name in ("m.jsonl", "m.csv"):
        dataset = roots.open(root / name)
        assert [(s.path.name, s.label, s.group) for s in dataset.samples] == [
            ("0.png", "cat", "indoor"),
            ("1.png", "dog", "outdoor"),
        ]
        assert dataset.has_groups


def test_paths_outside_the_roots_are_refused(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("elsewhere")
    write_png(other / "x" / "a.png", 1)
    roots = DatasetRoots([root])
    with pytest.raises(PermissionDeniedError, match="outside the dataset roots"):
        roots.open(other)
    with pytest.raises(PermissionDeniedError):
        roots.open(root / ".." / other.name)
    (root / "escape.jsonl").write_text(
        json.dumps({"path": str(other / "x" / "a.png"), "label": "x"})
    )
    with pytest.raises(PermissionDeniedError):
        roots.open(root / "escape.jsonl")
    os.symlink(other, root / "link")
    with pytest.raises(PermissionDeniedError):
        roots.open(root / "link")


def test_bad_datasets_are_clear_errors(root: Path) -> None:
    roots = DatasetRoots([root])
    (root / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="has no images"):
        roots.open(root / "empty")
    with pytest.raises(NotFoundError):
        roots.open(root / "missing")
    (root / "bad.jsonl").write_text('{"path": "a.png"}\n')
    with pytest.raises(InvalidArgumentError, match="line 1"):
        roots.open(root / "bad.jsonl")
    (root / "bad.csv").write_text("file,class\na.png,cat\n")
    with pytest.raises(InvalidArgumentError, match="header must name path and label"):
        roots.open(root / "bad.csv")
    (root / "data.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match="must be a folder"):
        roots.open(root / "data.txt")
    dataset = roots.open(root / "folder")
    with pytest.raises(InvalidArgumentError, match="not among the model's labels: cat"):
        label_indices(dataset, ["dog"])


def test_subset_is_seeded_and_keeps_order(root: Path) -> None:
    dataset = DatasetRoots([root]).open(root / "folder")
    a, b = dataset.subset(3, seed=5), dataset.subset(3, seed=5)
    assert a == b and len(a.samples) == 3
    order = [dataset.samples.index(s) for s in a.samples]
    assert order == sorted(order)
    assert dataset.subset(None, 0) is dataset


def test_load_rgb(root: Path) -> None:
    rgb = load_rgb(root / "folder" / "cat" / "2.png", max_pixels=100)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8 and rgb.max() == 2
    with pytest.raises(InvalidArgumentError, match="pixels"):
        load_rgb(root / "folder" / "cat" / "2.png", max_pixels=10)
    with pytest.raises(InvalidArgumentError, match="not a readable image"):
        load_rgb(root / "folder" / "cat" / "notes.txt", max_pixels=100)
