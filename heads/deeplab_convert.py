"""Load checkpoints of the popular PyTorch DeepLabV3+ MobileNetV2 (bubbliiiing/deeplabv3-plus-pytorch, VOC val
mIoU 72.59 at 512x512) into our :class:`~heads.deeplabv3plus.Segmenter`.

Their model, as published: MobileNetV2 ``features[:-1]`` in the flat layout under ``backbone.features.*`` (the
1280ch conv dropped), low-level map = output of ``features[3]`` (24ch, stride 4), deep map = ``features[17]``
(320ch). Output stride 16 (or 8) is reached by dilation exactly as :mod:`backbones.dilation` does it: the first
block of a stage that lost its stride keeps the previous dilation, the later blocks double it. ASPP rates
``(6, 12, 18) * 16 / os``; every head conv has a bias followed by a BN (``branch1..4``, ``branch5_conv/_bn`` on the
image pool, ``conv_cat``, ``shortcut_conv`` 1x1 -> 48, ``cat_conv`` two 3x3 of 256 with dropout 0.5 and 0.1 after
them), ``cls_conv`` keeps its bias, every resize is bilinear with ``align_corners=True``, concat order
``[aspp, low_level]``.

A conv bias before a BN folds into the BN exactly: ``BN(Wx + b)`` with running mean ``m`` equals ``BN(Wx)`` with
running mean ``m - b`` (in training the batch mean absorbs ``b`` anyway). Their mid-decoder dropout (0.5) has no
counterpart here; dropout does not change evaluation logits.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from torch import Tensor

from backbones.base import strict_keywords
from backbones.weights import Preprocessing, convert_state_dict, read_checkpoint, unwrap

from .deeplabv3plus import Segmenter, create_segmenter

PUBLISHED_URL = ("https://github.com/bubbliiiing/deeplabv3-plus-pytorch/releases/download/v1.0/"
                 "deeplab_mobilenetv2.pth")
PUBLISHED_BACKBONE = "ld_mobilenetv2_100"
# Our head configured like theirs: dense 3x3 convs, widths 256/48/256, corner-aligned resizes, dropout before cls.
PUBLISHED_HEAD_KWARGS = {"align_corners": True, "separable": False, "dropout": 0.0, "classifier_dropout": 0.1}
# Their predict.py: RGB pixels / 255, no mean/std (letterboxed to 512x512 with gray 128 padding).
PUBLISHED_PREPROCESSING = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

# (their conv, their BN, our ConvNormAct) for every conv-BN pair of the head.
CONV_BN_PAIRS: tuple[tuple[str, str, str], ...] = (
    *((f"aspp.branch{i + 1}.0", f"aspp.branch{i + 1}.1", f"aspp.branches.{i}") for i in range(4)),
    ("aspp.branch5_conv", "aspp.branch5_bn", "aspp.pool.proj"),
    ("aspp.conv_cat.0", "aspp.conv_cat.1", "aspp.project"),
    ("shortcut_conv.0", "shortcut_conv.1", "low_level"),
    ("cat_conv.0", "cat_conv.1", "decoder.0"),
    ("cat_conv.4", "cat_conv.5", "decoder.1"),
)
BN_KEYS = ("weight", "bias", "running_mean", "running_var")
THEIR_HEAD_KEYS = frozenset({"cls_conv.weight", "cls_conv.bias"}.union(*(
    {f"{conv}.weight", f"{conv}.bias", f"{bn}.num_batches_tracked", *(f"{bn}.{k}" for k in BN_KEYS)}
    for conv, bn, _ in CONV_BN_PAIRS)))


def _fold_pair(sd: Mapping[str, Tensor], conv: str, bn: str, ours: str) -> dict[str, Tensor]:
    """One conv(+bias) -> BN pair as our bias-free ``ConvNormAct``; the bias moves into the running mean."""
    out = {f"{ours}.conv.weight": sd[f"{conv}.weight"], **{f"{ours}.bn.{k}": sd[f"{bn}.{k}"] for k in BN_KEYS}}
    if f"{bn}.num_batches_tracked" in sd:
        out[f"{ours}.bn.num_batches_tracked"] = sd[f"{bn}.num_batches_tracked"]
    if f"{conv}.bias" in sd:
        out[f"{ours}.bn.running_mean"] = out[f"{ours}.bn.running_mean"] - sd[f"{conv}.bias"]
    return out


def _rename_head(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Our head's keys (without the ``head.`` prefix) from theirs, and the keys of theirs that are missing."""
    head: dict[str, Tensor] = {}
    missing = [k for k in ("cls_conv.weight", "cls_conv.bias") if k not in sd]
    if not missing:
        head.update({"classifier.weight": sd["cls_conv.weight"], "classifier.bias": sd["cls_conv.bias"]})
    for conv, bn, ours in CONV_BN_PAIRS:
        absent = [k for k in (f"{conv}.weight", *(f"{bn}.{k}" for k in BN_KEYS)) if k not in sd]
        missing += absent
        if not absent:
            head.update(_fold_pair(sd, conv, bn, ours))
    return head, missing


def convert_deeplab_state_dict(model: Segmenter, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and fold) a state dict in the published layout to ``model``'s keys.

    ``model`` must be built like theirs (see :func:`create_published_segmenter`). Raises ValueError listing
    missing, unexpected and shape-mismatched keys.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    head, missing = _rename_head(sd)
    unexpected = sorted(k for k in sd if not k.startswith("backbone.") and k not in THEIR_HEAD_KEYS)
    expected = model.head.state_dict()
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in head.items() if k in expected and v.shape != expected[k].shape]
    lacks = sorted(set(head) - set(expected))
    unfilled = sorted(k for k in expected if k not in head and not k.endswith("num_batches_tracked"))
    if missing or unexpected or wrong or lacks or unfilled:
        raise ValueError(f"not a DeepLabV3+ checkpoint in the published layout matching this model: missing "
                         f"{missing[:8]}, unexpected {unexpected[:8]}, shape mismatch {wrong[:8]}; our head lacks "
                         f"{lacks[:8]} and gets nothing for {unfilled[:8]} (build it with create_published_segmenter)")
    head = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **head}
    backbone = convert_state_dict(model.backbone, {k: v for k, v in sd.items() if k.startswith("backbone.")})
    return {**{f"backbone.{k}": v for k, v in backbone.items()}, **{f"head.{k}": v for k, v in head.items()}}


@strict_keywords
def create_published_segmenter(num_classes: int = 21, *, output_stride: int = 16) -> Segmenter:
    """Our model configured like the published one (MobileNetV2 1.0, stride-4 24ch and 320ch taps)."""
    return create_segmenter(PUBLISHED_BACKBONE, num_classes, output_stride=output_stride, **PUBLISHED_HEAD_KWARGS)


@strict_keywords
def load_published_deeplab(source: str | os.PathLike | Mapping[str, Tensor] = PUBLISHED_URL, *,
                           output_stride: int = 16) -> Segmenter:
    """Build our model and load a published-layout checkpoint into it (path, URL or state dict).

    The class count is read from ``cls_conv.weight``. ``model.preprocessing`` is set to theirs (RGB / 255).
    Their code supports output stride 16 and 8; 32 loads too but was never trained.
    """
    state_dict = unwrap(source) if isinstance(source, Mapping) else read_checkpoint(source)
    cls = state_dict.get("cls_conv.weight", state_dict.get("module.cls_conv.weight"))
    if cls is None:
        raise ValueError(f"no cls_conv.weight: not a checkpoint in the published DeepLabV3+ layout; first keys "
                         f"{list(state_dict)[:6]}")
    model = create_published_segmenter(cls.shape[0], output_stride=output_stride)
    model.load_state_dict(convert_deeplab_state_dict(model, state_dict))
    model.preprocessing = PUBLISHED_PREPROCESSING
    return model
