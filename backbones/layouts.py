"""Checkpoint layouts people have, and their renaming onto ours (same tensors, other names).

Each layout is described as a table of conv-BN pairs: ``(our module, their conv, their BN)``. Tables are made
from the full architecture, so a checkpoint also loads into a backbone truncated by ``out_indices``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from torch import Tensor

from .base import Backbone
from .mobilenetv1 import ARCH as MNV1_ARCH, MobileNetV1
from .mobilenetv2 import ARCH, MobileNetV2
from .shufflenetv1 import STAGE_REPEATS, ShuffleNetV1

# (our ConvNormAct, their conv, their BN); ours is None for a module of theirs that we do not build (dropped).
Pair = tuple[str | None, str, str]
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Keys that identify a layout, checked in order (after wrapper prefixes are removed).
SIGNATURES: tuple[tuple[str, str], ...] = (
    ("lightdense", "stem.conv.weight"),
    ("timm", "conv_stem.weight"),
    ("torchvision", "features.1.conv.0.0.weight"),
    ("flat", "features.1.conv.0.weight"),
    ("megvii", "first_conv.0.weight"),
    ("marvis", "model.1.3.weight"),
    ("kuangliu", "layers.0.conv1.weight"),
)
# Classifier keys of each layout -> ours (kept only with keep_classifier).
CLASSIFIERS: dict[str, tuple[str, ...]] = {
    "lightdense": ("classifier",), "timm": ("classifier",), "torchvision": ("classifier.1",),
    "flat": ("classifier", "classifier.1"), "megvii": ("classifier.0",), "marvis": ("fc",), "kuangliu": ("linear",),
}


def _blocks(repeats: list[int]) -> Iterator[tuple[int, int, int]]:
    """``(flat index from 0, stage, block)`` over an architecture's blocks."""
    n = 0
    for s, count in enumerate(repeats):
        for b in range(count):
            yield n, s, b
            n += 1


def _mobilenetv2_pairs(layout: str) -> list[Pair]:
    """Conv-BN pairs of MobileNetV2 (torchvision numbering: features.0 stem, 1..17 blocks, 18 head)."""
    parts = ("expand", "dw", "project")
    pairs: list[Pair] = []
    for n, s, b in _blocks([row[2] for row in ARCH]):
        ours = [f"stages.{s}.{b}.{p}" for p in parts[ARCH[s][0] == 1:]]
        f = f"features.{n + 1}.conv"
        theirs = {
            "lightdense": [(f"{o}.conv", f"{o}.bn") for o in ours],
            "torchvision": [(f"{f}.0.0", f"{f}.0.1"), (f"{f}.1.0", f"{f}.1.1"), (f"{f}.2", f"{f}.3")]
            if len(ours) == 3 else [(f"{f}.0.0", f"{f}.0.1"), (f"{f}.1", f"{f}.2")],
            "flat": [(f"{f}.{3 * i}", f"{f}.{3 * i + 1}") for i in range(len(ours))],
            "timm": [(f"blocks.{s}.{b}.{c}", f"blocks.{s}.{b}.bn{i + 1}") for i, c in
                     enumerate(("conv_pw", "conv_dw", "conv_pwl") if len(ours) == 3 else ("conv_dw", "conv_pw"))],
        }[layout]
        pairs += [(o, c, n_) for o, (c, n_) in zip(ours, theirs)]
    ends = {"lightdense": (("stem.conv", "stem.bn"), ("head.conv", "head.bn")),
            "timm": (("conv_stem", "bn1"), ("conv_head", "bn2"))}
    stem, head = ends.get(layout, (("features.0.0", "features.0.1"), ("features.18.0", "features.18.1")))
    return [("stem", *stem), *pairs, ("head", *head)]


def _shufflenetv1_pairs(layout: str) -> list[Pair]:
    """Conv-BN pairs of ShuffleNetV1 (official: first_conv, features.0..15, branch_main_1/2)."""
    pairs: list[Pair] = [("stem", "stem.conv", "stem.bn") if layout == "lightdense" else
                         ("stem", "first_conv.0", "first_conv.1")]
    for n, s, b in _blocks(list(STAGE_REPEATS)):
        ours = f"stages.{s}.{b}"
        if layout == "lightdense":
            pairs += [(f"{ours}.{p}", f"{ours}.{p}.conv", f"{ours}.{p}.bn") for p in ("gconv1", "dw", "gconv2")]
        else:
            f = f"features.{n}"
            pairs += [(f"{ours}.gconv1", f"{f}.branch_main_1.0", f"{f}.branch_main_1.1"),
                      (f"{ours}.dw", f"{f}.branch_main_1.3", f"{f}.branch_main_1.4"),
                      (f"{ours}.gconv2", f"{f}.branch_main_2.0", f"{f}.branch_main_2.1")]
    return pairs


def _mobilenetv1_pairs(layout: str) -> list[Pair]:
    """Conv-BN pairs of MobileNetV1: the stem, then per block (paper Table 1 order) depthwise and pointwise.

    marvis (the port pytorch-ssd uses): ``model.0`` stem, ``model.N.{0,1,3,4}`` blocks. kuangliu (the CIFAR
    tutorial port): ``conv1``/``bn1`` stem (stride 1 there), ``layers.N.conv1/bn1/conv2/bn2``. timm's
    ``mobilenetv1_100h`` adds a 1x1 ``conv_head`` after the last block: it lies past every tap and is dropped.
    """
    stem = {"lightdense": ("stem.conv", "stem.bn"), "timm": ("conv_stem", "bn1"), "marvis": ("model.0.0", "model.0.1"),
            "kuangliu": ("conv1", "bn1")}[layout]
    pairs: list[Pair] = [("stem", *stem)]
    for n, s, b in _blocks([row[1] for row in MNV1_ARCH]):
        ours, t = f"stages.{s}.{b}", f"blocks.{s}.{b}"
        theirs = {
            "lightdense": [(f"{ours}.dw.conv", f"{ours}.dw.bn"), (f"{ours}.pw.conv", f"{ours}.pw.bn")],
            "timm": [(f"{t}.conv_dw", f"{t}.bn1"), (f"{t}.conv_pw", f"{t}.bn2")],
            "marvis": [(f"model.{n + 1}.0", f"model.{n + 1}.1"), (f"model.{n + 1}.3", f"model.{n + 1}.4")],
            "kuangliu": [(f"layers.{n}.conv1", f"layers.{n}.bn1"), (f"layers.{n}.conv2", f"layers.{n}.bn2")],
        }[layout]
        pairs += [(f"{ours}.{part}", conv, bn) for part, (conv, bn) in zip(("dw", "pw"), theirs)]
    if layout == "timm":
        pairs.append((None, "conv_head", "bn2"))
    return pairs


# Per family: the layouts it can load and their conv-BN tables.
FAMILIES = {
    MobileNetV1: (("lightdense", "timm", "marvis", "kuangliu"), _mobilenetv1_pairs),
    MobileNetV2: (("lightdense", "torchvision", "flat", "timm"), _mobilenetv2_pairs),
    ShuffleNetV1: (("lightdense", "megvii"), _shufflenetv1_pairs),
}


def detect_layout(state_dict: Mapping[str, Tensor]) -> str | None:
    """Name of the layout ``state_dict`` is in, or ``None``."""
    return next((name for name, key in SIGNATURES if key in state_dict), None)


def layout_pairs(model: Backbone, layout: str) -> list[Pair]:
    """The conv-BN table of ``layout`` for ``model``'s family; ValueError if the family has no such layout."""
    family = next((cls for cls in FAMILIES if isinstance(model, cls)), None)
    valid, pairs = FAMILIES.get(family, ((), None))
    if layout not in valid:
        raise ValueError(f"a {layout!r} checkpoint cannot load into {type(model).__name__}; "
                         f"layouts it understands: {list(valid)}")
    return pairs(layout)


def rename(state_dict: Mapping[str, Tensor], pairs: list[Pair], layout: str,
           keep_classifier: bool) -> tuple[dict[str, Tensor], set[str]]:
    """Rename via ``pairs``; return the renamed dict and the keys of theirs that nothing consumed.

    Modules of theirs that we do not build are dropped; with ``keep_classifier`` they are an error, since the
    classifier after them would then read other features than it was trained on.
    """
    out: dict[str, Tensor] = {}
    for ours, conv, bn in pairs:
        if ours is None:
            if keep_classifier and f"{conv}.weight" in state_dict:
                raise ValueError(f"the checkpoint has a {conv!r} module between the last tap and its classifier that "
                                 "this architecture does not have: its features load (backbones.create_backbone), "
                                 "its classifier cannot")
            continue
        if f"{conv}.weight" in state_dict:
            out[f"{ours}.conv.weight"] = state_dict[f"{conv}.weight"]
        for suffix in BN_SUFFIXES:
            if f"{bn}.{suffix}" in state_dict:
                out[f"{ours}.bn.{suffix}"] = state_dict[f"{bn}.{suffix}"]
    consumed = {f"{c}.weight" for _, c, _ in pairs} | {f"{b}.{s}" for _, _, b in pairs for s in BN_SUFFIXES}
    for head in CLASSIFIERS[layout]:
        for suffix in ("weight", "bias"):
            key = f"{head}.{suffix}"
            if key in state_dict:
                consumed.add(key)
                if keep_classifier:
                    out[f"classifier.{suffix}"] = state_dict[key]
    return out, set(state_dict) - consumed
