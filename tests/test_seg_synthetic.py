"""The synthetic dataset is a valid VOC folder with ignore boundaries, all classes, and a fixed seed."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.seg_synthetic import SYNTHETIC_CLASSES, make_synthetic_voc
from tasks.seg_data import IGNORE_INDEX, VOCSegmentation


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("syn"), num_train=12, num_val=4, size_range=(48, 80), seed=1)


def test_reads_through_the_voc_reader_with_every_class_and_boundaries(synthetic):
    ds = VOCSegmentation(synthetic, "train", num_classes=len(SYNTHETIC_CLASSES))
    labels = [ds.load(i)[1] for i in range(len(ds))]
    assert set(np.unique(np.concatenate([lab.ravel() for lab in labels]))) == {*range(5), IGNORE_INDEX}
    assert all((lab == IGNORE_INDEX).any() for lab in labels), "every object is outlined by 255"
    sizes = {lab.shape for lab in labels}
    assert len(sizes) > 1 and all(48 <= s <= 80 for shape in sizes for s in shape)
    assert len(VOCSegmentation(synthetic, "val", num_classes=5)) == 4
    assert len(VOCSegmentation(synthetic, "trainval", num_classes=5)) == 16


def test_same_seed_same_files_other_seed_different(synthetic, tmp_path):
    again = make_synthetic_voc(tmp_path / "a", num_train=12, num_val=4, size_range=(48, 80), seed=1)
    other = make_synthetic_voc(tmp_path / "b", num_train=12, num_val=4, size_range=(48, 80), seed=2)
    name = "SegmentationClass/synth_train_00003.png"
    assert (again / name).read_bytes() == (synthetic / name).read_bytes()
    assert (other / name).read_bytes() != (synthetic / name).read_bytes()


def test_existing_dataset_is_reused(synthetic):
    image = synthetic / "JPEGImages" / "synth_val_00000.jpg"
    before = image.stat().st_mtime_ns
    make_synthetic_voc(synthetic.parent, num_train=12, num_val=4, size_range=(48, 80), seed=1)
    assert image.stat().st_mtime_ns == before


@pytest.mark.parametrize("kwargs,match", [({"num_train": 0}, "positive"), ({"size_range": (20, 40)}, "32 <= low")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_voc(tmp_path, **kwargs)
