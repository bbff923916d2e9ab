"""deploy/models/make_ood_data.py: layout, determinism and exact defect masks of the OOD sets."""

from __future__ import annotations

import string
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "deploy" / "models"))
import make_ood_data as ood

PER_SET = 6
COUNTS = ood.AnomalyCounts(train_good=4, test_good=3, test_defect=6)
TILES = Path(ood.ANOMALY) / ood.PRODUCT


def build(root: Path, seed: int, per_set: int = PER_SET) -> Path:
    """Generate every set under root with the small test counts."""
    ood.generate(root, seed=seed, per_set=per_set, anomaly=COUNTS)
    return root


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("ood_seed0"), seed=0)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


@pytest.mark.parametrize("name", ood.OOD_SETS)
def test_ood_sets_are_imagefolders_of_28x28_greyscale(out: Path, name: str) -> None:
    assert sorted(p.name for p in (out / name).iterdir()) == ["SOURCES.txt", "ood"]
    paths = sorted((out / name / "ood").glob("*.png"))
    assert len(paths) == PER_SET
    for path in paths:
        array = load(path)
        assert array.shape == (28, 28)
        assert array.dtype == np.uint8
        assert array.max() > array.min()


def test_anomaly_layout_counts_and_shapes(out: Path) -> None:
    tiles = out / TILES
    expected = {
        "train/good": COUNTS.train_good,
        "test/good": COUNTS.test_good,
        "test/defect": COUNTS.test_defect,
        "ground_truth/defect": COUNTS.test_defect,
    }
    for split, count in expected.items():
        paths = sorted((tiles / split).glob("*.png"))
        assert len(paths) == count, split
        assert all(load(p).shape == (64, 64) for p in paths)
    assert (out / ood.ANOMALY / "SOURCES.txt").read_text().strip()


def test_only_defects_have_masks(out: Path) -> None:
    tiles = out / TILES
    assert [p.name for p in (tiles / "ground_truth").iterdir()] == ["defect"]
    defects = sorted(p.stem for p in (tiles / "test/defect").glob("*.png"))
    masks = sorted(p.stem for p in (tiles / "ground_truth/defect").glob("*.png"))
    assert masks == [f"{stem}_mask" for stem in defects]


def test_same_seed_gives_identical_bytes(out: Path, tmp_path: Path) -> None:
    assert files(build(tmp_path, seed=0)) == files(out)


def test_other_seed_changes_every_image(out: Path, tmp_path: Path) -> None:
    other = build(tmp_path, seed=1)
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 3 * PER_SET + COUNTS.train_good + COUNTS.test_good + 2 * COUNTS.test_defect
    for path in pngs:  # defect names carry the kind, which follows the index: same names
        assert not np.array_equal(load(path), load(other / path.relative_to(out))), path


def test_fewer_images_are_a_prefix_of_more(out: Path, tmp_path: Path) -> None:
    small = build(tmp_path, seed=0, per_set=2)
    for name in ood.OOD_SETS:
        for path in (small / name / "ood").glob("*.png"):
            assert path.read_bytes() == (out / path.relative_to(small)).read_bytes()


def test_letters_never_draw_a_digit_or_lookalike() -> None:
    chars = set(ood.CHARACTERS)
    assert len(chars) == len(ood.CHARACTERS)
    assert not chars & set(string.digits)
    assert not chars & ood.DIGIT_LOOKALIKES
    assert {"O", "I", "S", "Z", "B", "G"} <= ood.DIGIT_LOOKALIKES


def test_every_character_renders_ink() -> None:
    for index in range(len(ood.CHARACTERS)):
        assert ood.make_letter(0, index).max() > 128, ood.CHARACTERS[index]


def test_defect_masks_are_binary_and_mark_exactly_the_changed_pixels(out: Path) -> None:
    tiles = out / TILES
    for index in range(COUNTS.test_defect):
        sample = ood.make_defect(0, index)
        stem = f"{index:04d}_{sample.kind}"
        image = load(tiles / "test/defect" / f"{stem}.png")
        mask = load(tiles / "ground_truth/defect" / f"{stem}_mask.png")
        np.testing.assert_array_equal(image, sample.image)
        np.testing.assert_array_equal(mask, sample.mask)
        assert set(np.unique(mask)) <= {0, 255}
        inside = mask == 255
        changed = image != sample.clean
        assert inside.sum() >= ood.MIN_DEFECT_PIXELS, stem
        assert changed[inside].all(), stem
        assert (changed & ~inside).mean() < 0.01, stem


def test_defect_kinds_all_appear() -> None:
    assert {ood.make_defect(0, i).kind for i in range(3)} == set(ood.DEFECT_KINDS)


def test_clean_tiles_share_one_grey_scale() -> None:
    low, high = ood.SURFACE_RANGE
    for index in range(4):
        tile = ood.make_tile(0, "train", index)
        assert low <= tile.min() and tile.max() <= high


def test_cli_writes_all_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [
        "make_ood_data.py",
        "--out",
        str(tmp_path),
        "--per-set",
        "2",
        "--anomaly",
        "1",
        "1",
        "3",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    ood.main()
    assert len(list(tmp_path.rglob("*.png"))) == 3 * 2 + 1 + 1 + 3 * 2
    assert len(list(tmp_path.rglob("SOURCES.txt"))) == 4
