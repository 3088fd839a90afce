"""VOC-layout reading, label validation and augmentation, on a VOC folder the test writes itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.engine import list_images
from tasks.seg_transforms import eval_transform, pad_collate, train_transform
from tasks.seg_data import IGNORE_INDEX, VOCSegmentation, read_label, voc_palette


def _write_label(path: Path, label: np.ndarray, *, mode: str = "P") -> None:
    image = Image.fromarray(label, mode="L")
    if mode == "P":
        image = image.convert("P")
        image.putpalette(voc_palette().tobytes())
    image.save(path)


def _voc(root: Path, labels: dict[str, np.ndarray], *, splits: dict[str, list[str]]) -> Path:
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, label in labels.items():
        pixels = rng.integers(0, 256, size=(*label.shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{image_id}.jpg")
        _write_label(voc / "SegmentationClass" / f"{image_id}.png", label)
    for name, ids in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return voc


def _label(h: int = 30, w: int = 40, value: int = 3) -> np.ndarray:
    """A square object of class ``value`` with a 1-pixel 255 boundary, as in VOC."""
    label = np.zeros((h, w), np.uint8)
    label[8:20, 10:25] = IGNORE_INDEX
    label[9:19, 11:24] = value
    return label


@pytest.fixture
def voc(tmp_path) -> Path:
    return _voc(tmp_path, {"a": _label(), "b": _label(25, 33, 20), "bad": _label(value=21)},
                splits={"train": ["a", "b"], "val": ["b"], "badval": ["bad"], "missing": ["a", "nope"]})


def test_reads_images_and_keeps_ignore_boundary(voc):
    ds = VOCSegmentation(voc, "train", num_classes=21)
    image, label = ds.load(0)
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, _label())


def test_label_outside_classes_is_an_error_naming_the_file(voc):
    ds = VOCSegmentation(voc, "badval", num_classes=21)
    with pytest.raises(ValueError, match=r"bad\.png holds values \[21\].*0\.\.20 and 255"):
        ds[0]


@pytest.mark.parametrize("split,match", [("missing", r"nope\.jpg"), ("test", r"test\.txt")])
def test_missing_files_are_named(voc, split, match):
    with pytest.raises(FileNotFoundError, match=match):
        VOCSegmentation(voc, split)


def test_rgb_label_and_corrupt_image_are_rejected(voc):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(voc / "SegmentationClass" / "a.png")
    (voc / "JPEGImages" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = VOCSegmentation(voc, "train")
    with pytest.raises(ValueError, match=r"a\.png is a 'RGB' image"):
        ds.load(0)
    with pytest.raises(ValueError, match=r"cannot decode image .*b\.jpg"):
        ds.load(1)


def test_sbd_train_aug_reads_grey_labels_and_refuses_val_leak(voc, tmp_path):
    sbd = tmp_path / "sbd"
    (sbd / "SegmentationClassAug").mkdir(parents=True)
    _write_label(sbd / "SegmentationClassAug" / "a.png", _label(value=7), mode="L")
    (sbd / "train_aug.txt").write_text("a\n")
    ds = VOCSegmentation(voc, "train_aug", sbd_root=sbd)
    assert set(np.unique(ds.load(0)[1])) == {0, 7, IGNORE_INDEX}
    (sbd / "train_aug.txt").write_text("a\nb\n")
    _write_label(sbd / "SegmentationClassAug" / "b.png", _label(25, 33), mode="L")
    with pytest.raises(ValueError, match="1 val images"):
        VOCSegmentation(voc, "train_aug", sbd_root=sbd)


def test_read_label_accepts_every_valid_value(tmp_path):
    label = np.array([[0, 5, 255]], np.uint8)
    _write_label(tmp_path / "l.png", label)
    np.testing.assert_array_equal(read_label(tmp_path / "l.png", num_classes=6), label)


def test_train_transform_pads_mask_with_ignore_and_image_with_zero(voc):
    ds = VOCSegmentation(voc, "train", transform=train_transform(64, scale_range=(1.0, 1.0), hflip=0.0))
    sample = ds[(0, 123)]
    image, mask = sample["image"], sample["mask"]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
    rows = (mask != IGNORE_INDEX).any(1).nonzero().squeeze(1)
    assert rows.numel() == 30, "the 30 image rows keep their labels, the padding is 255"
    assert image[:, : rows[0]].abs().max() == 0, "padding is the mean colour: 0 after normalising"
    assert torch.equal(ds[(0, 123)]["image"], image), "a seed fixes the augmentation"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_scale_keeps_labels_valid(voc, seed):
    ds = VOCSegmentation(voc, "train", transform=train_transform(32))
    mask = ds[(1, seed)]["mask"]
    assert set(mask.unique().tolist()) <= {0, 20, IGNORE_INDEX}


def test_eval_keeps_full_resolution_and_collate_pads_with_ignore(voc):
    ds = VOCSegmentation(voc, "train", transform=eval_transform())
    batch = pad_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 30, 40)
    assert (batch["mask"][1, 25:] == IGNORE_INDEX).all() and (batch["mask"][1, :, 33:] == IGNORE_INDEX).all()
    assert batch["index"].tolist() == [0, 1]


def test_predict_lists_folders_and_names_missing_inputs(voc):
    folder = voc / "JPEGImages"
    assert [p.name for p in list_images([str(folder)])] == ["a.jpg", "b.jpg", "bad.jpg"]
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        list_images([str(folder / "nope.jpg")])
    with pytest.raises(ValueError, match="no images"):
        list_images([str(voc / "ImageSets")])
