"""The training command line: per-mode defaults and rejected combinations."""

from __future__ import annotations

import pytest

from tasks.seg_config import SYNTHETIC_DEFAULTS, VOC_DEFAULTS, parse_args


def test_voc_defaults_follow_the_published_recipe():
    args = parse_args(["--data-root", "VOC2012"])
    assert (args.batch_size, args.iters, args.epochs, args.lr, args.crop_size, args.output_stride) == \
        (16, 30000, None, 0.01, 513, 16)
    assert (args.num_classes, args.train_split, args.momentum, args.weight_decay) == (21, "train", 0.9, 1e-4)
    assert parse_args(["--data-root", "VOC2012", "--sbd-root", "SBD"]).train_split == "train_aug"


def test_synthetic_defaults_and_explicit_values_win():
    args = parse_args([])
    assert all(getattr(args, k) == v for k, v in SYNTHETIC_DEFAULTS.items())
    args = parse_args(["--iters", "7", "--crop-size", "64", "--no-separable"])
    assert (args.iters, args.epochs, args.crop_size, args.separable) == (7, None, 64, False)
    assert parse_args(["--data-root", "x", "--epochs", "3"]).iters is None
    assert set(SYNTHETIC_DEFAULTS) <= set(VOC_DEFAULTS) | {"epochs"}


@pytest.mark.parametrize("argv,match", [
    (["--iters", "5", "--epochs", "2"], "not both"),
    (["--crop-size", "0"], "--crop-size must be positive"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--num-classes", "3"], "synthetic dataset has 5 classes"),
    (["--backbone", "resnet50"], "invalid choice"),
])
def test_bad_combinations_exit_with_message(argv, match, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert match in capsys.readouterr().err
