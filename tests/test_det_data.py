"""VOC annotation parsing: coordinate convention, validation errors, clipping, empty images, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.det_data import AnnotationError, VOCDetection, parse_annotation
from tasks.det_synthetic import make_synthetic_voc, write_annotation

W, H = 64, 48


def _object(name: str, box: tuple, difficult: int = 0) -> str:
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>"


def _voc(root: Path, images: dict[str, list[str]], *, split: str = "train", size: tuple = (W, H)) -> Path:
    """A VOC directory whose annotations hold the given raw <object> XML snippets."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        Image.new("RGB", size, (90, 90, 90)).save(root / "JPEGImages" / f"{image_id}.jpg")
        xml = (f"<annotation><filename>{image_id}.jpg</filename><size><width>{W}</width><height>{H}</height>"
               f"<depth>3</depth></size>{''.join(objects)}</annotation>")
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    return root


def test_one_based_inclusive_boxes_become_pixel_edges(tmp_path):
    root = _voc(tmp_path, {"a": [_object("dog", (1, 1, W, H)), _object("cat", (10, 20, 10, 29), difficult=1)]})
    record, clipped = parse_annotation(root / "Annotations" / "a.xml", root / "JPEGImages")
    np.testing.assert_array_equal(record.boxes, [[0, 0, W, H], [9, 19, 10, 29]])  # a 1x10-pixel box stays 1 wide
    assert record.labels.tolist() == [12, 8] and record.difficult.tolist() == [False, True] and clipped == 0


@pytest.mark.parametrize(
    "obj,match",
    [
        (_object("doggo", (1, 1, 5, 5)), r"object 1 \(doggo\): unknown class 'doggo'; valid classes are aeroplane"),
        (_object("dog", (30, 5, 20, 9)), r"object 1 \(dog\): inverted box xmin=30 xmax=20"),
        (_object("dog", (70, 5, 80, 9)), r"object 1 \(dog\): box .* lies outside the 64x48 image"),
        (_object("dog", (-9, 5, 0, 9)), r"object 1 \(dog\): box .* lies outside"),
        (_object("dog", ("nan", 5, 9, 9)), r"object 1 \(dog\): <bndbox/xmin> is 'nan', expected a finite number"),
        (_object("dog", ("", 5, 9, 9)), r"object 1 \(dog\): <bndbox/xmin> is '', expected a number"),
        ("<object><name>dog</name></object>", r"object 1 \(dog\): missing <bndbox>"),
        (_object("dog", (1, 1, 5, 5), difficult="yes"), r"object 1 \(dog\): <difficult> is 'yes', expected 0 or 1"),
        (_object("dog", (1, 1, 5, 5), difficult=2), r"object 1 \(dog\): <difficult> is '2', expected 0 or 1"),
    ],
)
def test_bad_objects_name_file_and_object(tmp_path, obj, match):
    root = _voc(tmp_path, {"img7": [_object("cat", (1, 1, 9, 9)), obj]})
    with pytest.raises(AnnotationError, match=rf"img7\.xml: {match}"):
        VOCDetection(root, "train")


def test_boxes_sticking_out_are_clipped_and_counted(tmp_path, caplog):
    root = _voc(tmp_path, {"a": [_object("cat", (0, 5, W + 3, 9)), _object("dog", (2, 2, 8, 8))]})
    with caplog.at_level("WARNING"):
        dataset = VOCDetection(root, "train")
    assert dataset.num_clipped == 1 and "clipped 1 boxes" in caplog.text
    np.testing.assert_array_equal(dataset.records[0].boxes[0], [0, 4, W, 9])


def test_empty_and_all_difficult_images(tmp_path):
    root = _voc(tmp_path, {"empty": [], "hard": [_object("cow", (3, 3, 30, 30), difficult=1)],
                           "ok": [_object("cow", (3, 3, 30, 30))]})
    assert len(VOCDetection(root, "train")) == 3  # evaluation keeps them: they can hold false positives
    train = VOCDetection(root, "train", keep_difficult=False, skip_empty=True)
    assert [r.image_id for r in train.records] == ["ok"]
    image, target = VOCDetection(root, "train")[0]
    assert image.shape == (3, H, W) and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_several_roots_and_missing_split(tmp_path):
    a = _voc(tmp_path / "VOC2007", {"x": [_object("car", (1, 1, 9, 9))]}, split="trainval")
    b = _voc(tmp_path / "VOC2012", {"y": [_object("bus", (1, 1, 9, 9))]}, split="trainval")
    assert [r.image_id for r in VOCDetection([a, b], "trainval").records] == ["x", "y"]
    with pytest.raises(FileNotFoundError, match=r"split list not found: .*test\.txt; lists in .*: \['trainval'\]"):
        VOCDetection(a, "test")
    with pytest.raises(ValueError, match="is not a VOC directory"):
        VOCDetection(tmp_path, "trainval")


def test_image_size_disagreeing_with_annotation_is_reported(tmp_path):
    root = _voc(tmp_path, {"a": [_object("cat", (1, 1, 9, 9))]}, size=(W + 1, H))
    with pytest.raises(AnnotationError, match=r"a\.jpg: image is 65x48 but its annotation says 64x48"):
        VOCDetection(root, "train")[0]


def test_write_annotation_round_trips(tmp_path):
    objects = [{"name": "boat", "box": (0, 3, 17, 40), "difficult": True}, {"name": "sheep", "box": (5, 6, W, H)}]
    write_annotation(tmp_path / "a.xml", "a.jpg", (W, H), objects)
    record, _ = parse_annotation(tmp_path / "a.xml", tmp_path)
    np.testing.assert_array_equal(record.boxes, [o["box"] for o in objects])
    assert record.difficult.tolist() == [True, False] and record.labels.tolist() == [4, 17]


def test_synthetic_dataset_has_voc_layout_and_painted_boxes(tmp_path):
    root = make_synthetic_voc(tmp_path / "syn", num_train=6, num_val=10, seed=3)
    assert {p.name for p in (root / "ImageSets" / "Main").iterdir()} == {"train.txt", "val.txt", "trainval.txt"}
    val = VOCDetection(root, "val")
    assert len(val) == 10 and sum(len(r.labels) == 0 for r in val.records) == 1  # one empty image in ten
    mtime = (root / "synthetic.json").stat().st_mtime_ns
    assert make_synthetic_voc(root, num_train=6, num_val=10, seed=3) == root  # reused, not rewritten
    assert (root / "synthetic.json").stat().st_mtime_ns == mtime
