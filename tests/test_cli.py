"""The task command lines: one vocabulary for both trainers, per-mode defaults, and what --help says."""

from __future__ import annotations

import pytest
import torch

from tasks import det_config, seg_config
from tasks.engine.cli import add_trainer_arguments

TASKS = {"seg": seg_config, "det": det_config}


def _parse(task: str, *argv: str, out: str | None = None):
    args, state = TASKS[task].parse_args([*argv, "--out", out or "/nonexistent/run"])
    assert state is None
    return args


def _voc_lists(root, split: str, images: int) -> str:
    """A VOC folder holding only ``ImageSets/Main/<split>.txt`` with ``images`` ids: what the recipe choice reads."""
    lists = root / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    (lists / f"{split}.txt").write_text("".join(f"{i:06d}\n" for i in range(images)))
    return str(root)


def test_voc_defaults_follow_the_published_recipes(tmp_path):
    seg = _parse("seg", "--data-root", "VOC2012")
    assert (seg.batch_size, seg.iters, seg.epochs, seg.lr, seg.crop_size, seg.output_stride, seg.schedule) == \
        (16, 30000, None, 0.01, 513, 16, "poly")
    assert (seg.num_classes, seg.train_split, seg.momentum, seg.weight_decay, seg.pretrained) == \
        (21, "train", 0.9, 1e-4, "default")
    assert _parse("seg", "--data-root", "VOC2012", "--sbd-root", "SBD").train_split == "train_aug"
    voc07, voc12 = (_voc_lists(tmp_path / name, "trainval", n) for name, n in (("VOC2007", 5011), ("VOC2012", 11540)))
    det = _parse("det", "--data-root", voc07, voc12)
    assert (det.size, det.batch_size, det.epochs, det.iters, det.lr, det.optimizer, det.schedule) == \
        (320, 32, 200, None, 0.01, "sgd", "cosine")
    assert (det.train_split, det.val_split, det.val_root, det.pretrained, det.warmup_epochs) == \
        ("trainval", "test", voc07, "default", 1.0)
    assert (det.recipe, det.weight_decay, det.max_zoom_out, det.iou_crop, det.photometric) == \
        ("published", 5e-4, 4.0, True, True)


def test_detection_recipe_follows_the_training_set_size(tmp_path):
    few = _voc_lists(tmp_path / "few", "train", det_config.SMALL_DATA_IMAGES - 1)
    det = _parse("det", "--data-root", few, "--train-split", "train")
    assert (det.recipe, det.optimizer, det.lr, det.weight_decay, det.max_zoom_out, det.iou_crop, det.photometric) == \
        ("small", "adamw", 3e-3, 0.01, 1.0, False, False)
    many = _voc_lists(tmp_path / "many", "train", det_config.SMALL_DATA_IMAGES)
    assert _parse("det", "--data-root", many, "--train-split", "train").recipe == "published"
    det = _parse("det", "--data-root", few, "--train-split", "train", "--recipe", "published", "--lr", "0.02")
    assert (det.recipe, det.optimizer, det.lr, det.iou_crop) == ("published", "sgd", 0.02, True)  # given beats recipe
    det = _parse("det", "--data-root", few, "--train-split", "train", "--optimizer", "sgd")
    assert (det.recipe, det.optimizer, det.lr) == ("small", "sgd", 3e-3)
    with pytest.raises(ValueError, match="--recipe applies to --data-root runs"):
        _parse("det", "--recipe", "small")
    # the run's first line lists these with their reasons (Trainer.describe)
    assert {"recipe", "optimizer", "lr", "max_zoom_out", "val_root"} <= set(det_config.DEFAULTS.derived(det))
    assert "recipe" not in det_config.DEFAULTS.derived(_parse("det"))


def test_sample_data_defaults_and_explicit_values_win():
    seg = _parse("seg")
    assert (seg.backbone, seg.epochs, seg.iters, seg.separable, seg.synthetic_images) == \
        ("ld_mobilenetv2_050", 30, None, True, (240, 60))
    seg = _parse("seg", "--iters", "7", "--crop-size", "64", "--no-separable")
    assert (seg.iters, seg.epochs, seg.crop_size, seg.separable) == (7, None, 64, False)
    assert _parse("seg", "--data-root", "x", "--epochs", "3").iters is None
    det = _parse("det", "--iters", "50", "--warmup-iters", "5")
    assert (det.iters, det.epochs, det.warmup_iters, det.warmup_epochs, det.optimizer) == (50, None, 5, None, "adamw")


@pytest.mark.parametrize("task", TASKS)
def test_both_trainers_share_every_common_option(task):
    import argparse

    shared = argparse.ArgumentParser()
    add_trainer_arguments(shared, data_root_help="x")
    names = {a.dest for a in shared._actions} - {"help"}
    parser = TASKS[task].build_parser()
    assert names <= {a.dest for a in parser._actions}
    for flag in ("--pretrained", "--iters", "--epochs", "--stop-after", "--eval-interval", "--resume",
                 "--num-visualize", "--threads", "--backbone-lr-mult", "--sync-bn"):
        assert flag in parser.format_help()


def test_backbone_lr_follows_pretrained():
    assert _parse("seg", "--data-root", "x").backbone_lr_mult == 0.1
    assert _parse("seg", "--data-root", "x", "--pretrained", "none").backbone_lr_mult == 1.0
    assert _parse("seg", "--pretrained", "weights.pth").backbone_lr_mult == 0.1
    assert _parse("seg", "--data-root", "x", "--backbone-lr-mult", "0.5").backbone_lr_mult == 0.5


def test_aspp_input_follows_pretrained_and_separable():
    scratch = ("--data-root", "x", "--pretrained", "none")
    assert _parse("seg", *scratch, "--separable").aspp_input == "final"
    assert _parse("seg", *scratch).aspp_input == "stage"  # the published dense head
    assert _parse("seg", "--data-root", "x", "--separable").aspp_input == "stage"  # pretrained: the paper's tap
    assert _parse("seg").aspp_input == "stage"  # the built-in sample run
    assert _parse("seg", "--data-root", "x", "--aspp-input", "final").aspp_input == "final"
    assert "aspp_input" in seg_config.DEFAULTS.derived(_parse("seg", *scratch))  # the run's first line says why


def test_segmentation_channels_last_follows_the_device(monkeypatch):
    """Segmentation trains in NHWC on CUDA only: CPU BatchNorm's NHWC kernel sums batch statistics imprecisely."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _parse("seg").channels_last is False
    assert _parse("seg", "--device", "cuda").channels_last is True
    assert _parse("seg", "--channels-last").channels_last is True
    assert "channels_last" in seg_config.DEFAULTS.derived(_parse("seg"))  # the run's first line says why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _parse("seg").channels_last is True
    assert _parse("seg", "--device", "cpu").channels_last is False


def test_detection_trains_in_channels_last_on_every_device(monkeypatch):
    """Detection measured better and faster in NHWC on CPU too (README, Compare with a plain training loop)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _parse("det").channels_last is True
    assert _parse("det", "--device", "cpu", "--data-root", "x").channels_last is True
    assert _parse("det", "--no-channels-last").channels_last is False


@pytest.mark.parametrize("task", TASKS)
def test_help_shows_the_default_of_each_mode(task):
    text = " ".join(TASKS[task].build_parser().format_help().split())
    lr = {"seg": "(default with --data-root: 0.01; without: 0.05)",
          "det": "(default with --data-root: by --recipe: published 0.01; small 0.003; without: 0.003)"}[task]
    assert lr in text
    assert "(default: 0.9)" in text  # --momentum, the same in both modes


@pytest.mark.parametrize("task,argv,match", [
    ("seg", ["--iters", "5", "--epochs", "2"], "give --iters or --epochs, not both"),
    ("det", ["--warmup-iters", "5", "--warmup-epochs", "2"], "give --warmup-iters or --warmup-epochs, not both"),
    ("seg", ["--num-classes", "3"], "sample data has 5 classes"),
    ("det", ["--max-zoom-out", "0.5"], "--max-zoom-out must be >= 1"),
])
def test_bad_combinations_raise_naming_the_options(task, argv, match):
    with pytest.raises(ValueError, match=match):
        _parse(task, *argv)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("argv,match", [
    (["--lr", "0"], "argument --lr: must be positive, got 0"),
    (["--lr", "-1"], "argument --lr: must be positive, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be positive"),
    (["--weight-decay", "-0.1"], "argument --weight-decay: must be >= 0"),
    (["--workers", "-1"], "argument --workers: must be >= 0"),
    (["--backbone", "resnet50"], "argument --backbone: invalid choice"),
])
def test_bad_values_exit_naming_the_flag(task, argv, match, capsys):
    with pytest.raises(SystemExit):
        _parse(task, *argv)
    assert match in capsys.readouterr().err
