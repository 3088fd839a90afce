"""The comparison command end to end at a toy budget, and the second generated dataset (tasks.scenes_synthetic)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks import compare_training
from tasks.det_data import VOCDetection, parse_annotation
from tasks.scenes_synthetic import SCENE_CLASSES, make_scenes_voc
from tasks.voc import VOC_CLASSES
from tasks.seg_data import CLASS_NAMES, IGNORE_INDEX, VOCSegmentation, read_label

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("task, dataset, keys", [("seg", "scenes", ("miou", "pixel_acc")),
                                                 ("det", "sample", ("map07", "map"))])
def test_quick_comparison_writes_both_scores(tmp_path, task, dataset, keys):
    out = tmp_path / "cmp"
    record = compare_training.main(["--task", task, "--dataset", dataset, "--quick", "--threads", "1", "--workers",
                                    "0", "--no-progress", "--out", str(out)])
    written = json.loads((out / "compare.json").read_text())
    assert written["task"] == task and written["dataset"] == dataset and written["budget"]["iters"] == 3
    for key in keys:
        ours, ref = written["ours"]["metrics"][key], written["reference"]["metrics"][key]
        assert isinstance(ours, float) and isinstance(ref, float) and 0 <= ours <= 1 and 0 <= ref <= 1, key
        assert written["difference"][key] == pytest.approx(ours - ref)
    results = json.loads((out / "ours" / "results.json").read_text())  # what our trainer itself reported
    assert results[keys[0]] == written["ours"]["metrics"][keys[0]] and results["iteration"] == 3
    assert "ld_mobilenetv2_100" in written["ours"]["argv"] and written["ours"]["wall_s"] > 0
    table = (out / "compare.md").read_text()
    assert table.startswith("| task | dataset |") and f"| {task} | {dataset} | 3 it × 2" in table
    ours, ref = written["ours"]["per_class"], written["reference"]["per_class"]  # where a gap comes from
    assert ours and all(0 <= v <= 1 for v in [*ours.values(), *ref.values()])
    if task == "det":  # AP is defined for exactly the classes with val boxes, the same for both
        data = out / "data"
        records = [parse_annotation(data / "Annotations" / f"{image_id}.xml", data / "JPEGImages")[0]
                   for image_id in (data / "ImageSets" / "Main" / "val.txt").read_text().split()]
        labels = {int(label) for record in records for label in record.labels}
        assert set(ours) == set(ref) == {VOC_CLASSES[label - 1] for label in labels}
    else:  # IoU is defined for the classes labelled or predicted: background always
        assert "background" in ours and f"| background | {100 * ref['background']:.2f} |" in table
    assert "| class | reference" in table
    assert record["reference"]["metrics"] == written["reference"]["metrics"]


def test_several_seeds_report_each_and_the_mean(tmp_path):
    out = tmp_path / "cmp"
    summary = compare_training.main(["--task", "seg", "--dataset", "sample", "--quick", "--seed", "3", "5",
                                     "--threads", "1", "--workers", "0", "--no-progress", "--out", str(out)])
    runs = [json.loads((out / f"seed_{seed}" / "compare.json").read_text()) for seed in (3, 5)]
    assert [r["budget"]["seed"] for r in runs] == [3, 5] and summary["seeds"] == [3, 5]
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(summary))
    miou = summary["metrics"]["miou"]
    assert miou["ours"] == [r["ours"]["metrics"]["miou"] for r in runs]
    assert miou["reference"] == [r["reference"]["metrics"]["miou"] for r in runs]
    assert miou["difference_mean"] == pytest.approx(np.mean(miou["ours"]) - np.mean(miou["reference"]))
    assert miou["ours_wins"] == sum(o >= r for o, r in zip(miou["ours"], miou["reference"]))
    background = summary["per_class_mean"]["background"]
    assert background["seeds"] == 2 and background["ours"] == pytest.approx(
        np.mean([r["ours"]["per_class"]["background"] for r in runs]))
    text = (out / "compare.md").read_text()
    assert "per class, mean over the seeds" in text
    assert "| mIoU | 5 |" in text and "| mIoU | mean ± sd |" in text and "seeds [3, 5]" in text
    with pytest.raises(ValueError, match="--seed lists a seed twice"):
        compare_training.main(["--task", "seg", "--quick", "--seed", "1", "1", "--out", str(tmp_path / "x")])


def test_out_must_be_new_or_empty(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "compare.md").write_text("an earlier run")
    with pytest.raises(ValueError, match=r"--out .*old already exists and is not empty"):
        compare_training.main(["--task", "seg", "--quick", "--out", str(out)])
    proc = subprocess.run([sys.executable, "tasks/compare_training.py", "--task", "det", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("python -m tasks.compare_training: error: --out")
    assert (out / "compare.md").read_text() == "an earlier run" and sorted(p.name for p in out.iterdir()) == [
        "compare.md"]


PARAMS = dict(num_train=6, num_val=3, seed=3, size_range=(64, 128))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes_voc(tmp_path_factory.mktemp("scenes") / "voc", **PARAMS)


def test_scenes_boxes_and_masks_agree(scenes):
    names, sizes = set(), set()
    for image_id in (scenes / "ImageSets" / "Main" / "trainval.txt").read_text().split():
        record, clipped = parse_annotation(scenes / "Annotations" / f"{image_id}.xml", scenes / "JPEGImages")
        label = read_label(scenes / "SegmentationClass" / f"{image_id}.png", num_classes=len(CLASS_NAMES))
        assert clipped == 0 and label.shape == (record.height, record.width) and len(record.labels) >= 1
        sizes.add(label.shape)
        covered = np.zeros(label.shape, bool)
        for box, cls in zip(record.boxes.astype(int), record.labels):
            names.add(CLASS_NAMES[cls])
            crop = label[box[1]:box[3], box[0]:box[2]]
            assert (crop == cls).any(), (image_id, box)
            on_object = (crop == cls) | (crop == IGNORE_INDEX)  # the outline band is 255, as in VOC
            assert on_object[0].any() and on_object[-1].any() and on_object[:, 0].any() and on_object[:, -1].any()
            covered[box[1]:box[3], box[0]:box[2]] |= label[box[1]:box[3], box[0]:box[2]] == cls
        labelled = (label != 0) & (label != IGNORE_INDEX)
        assert (covered == labelled).all(), f"{image_id}: labelled pixels outside every box of their class"
    assert names <= set(SCENE_CLASSES.values()) and len(names) >= 3
    assert len(sizes) > 1 and any(h != w for h, w in sizes) and all(64 <= s <= 128 for hw in sizes for s in hw)


def test_scenes_read_by_both_trainers_datasets(scenes):
    seg = VOCSegmentation(scenes, "train", num_classes=len(CLASS_NAMES))
    seg.verify()
    det = VOCDetection(scenes, "val")
    det.verify()
    assert len(seg) == 6 and len(det) == 3 and len(VOCSegmentation(scenes, "val")) == 3


def test_scenes_are_deterministic_reused_and_per_image(scenes, tmp_path):
    name = "SegmentationClass/scene_train_00004.png"
    again = make_scenes_voc(tmp_path / "again", **PARAMS)
    fewer = make_scenes_voc(tmp_path / "fewer", **{**PARAMS, "num_train": 5})  # image i depends on (seed, split, i)
    other = make_scenes_voc(tmp_path / "other", **{**PARAMS, "seed": 4})
    for path in (name, "JPEGImages/scene_val_00001.jpg", "Annotations/scene_train_00001.xml"):
        assert (again / path).read_bytes() == (scenes / path).read_bytes() == (fewer / path).read_bytes(), path
        assert (other / path).read_bytes() != (scenes / path).read_bytes(), path
    before = (scenes / name).stat().st_mtime_ns
    assert make_scenes_voc(scenes, **PARAMS) == scenes and (scenes / name).stat().st_mtime_ns == before
    assert not scenes.with_name(scenes.name + ".tmp").exists()
