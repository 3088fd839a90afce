"""The compared models: backbone features, DeepLabV3+ inference and a DeepLabV3+ training step.

References are built from the installed libraries with random weights (``weights=None``): speed does not depend
on the values. Where our default configuration does different work from a reference, the configurations of ours
closest to the reference's work are timed next to it; the report flags every pair whose counted MACs differ by
more than 10%.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from backbones import create_backbone
from heads import create_segmenter

from .measure import Comparison, Group, Subject
from .runtimes import runtime_subjects

__all__ = ["backbone_group", "deeplab_group", "fast_paths", "train_step", "train_step_group"]

MNV2 = "ld_mobilenetv2_100"
MNV1 = "ld_mobilenetv1_100"
SHUFFLENET = "ld_shufflenetv1_g3_100"
NUM_CLASSES = 21
NEAREST_SMP = ("separable", "separable_1280")  # our DeepLabV3+ configurations closest to smp's MACs


def _inference(model: nn.Module, x: Tensor) -> Callable[[], object]:
    def work() -> object:
        with torch.inference_mode():
            return model(x)
    return work


def _forward(model: nn.Module, x: Tensor) -> Callable[[], object]:
    """A forward pass without autograd in whatever mode ``model`` is (what MACs are counted on)."""
    def work() -> object:
        with torch.no_grad():
            return model(x)
    return work


def fast_paths(key: str, label: str, model: nn.Module, make_work: Callable[[nn.Module], Callable[[], object]], *,
               compile: bool, notes: list[str]) -> list[Subject]:
    """Fused copies of eval-mode ``model`` (subject ``key``), eager and compiled when asked and it works.

    The compiled copy runs once here, so compilation time stays out of the timings; a failure becomes a note.
    Folding leaves every conv's MACs as they were, so they are not counted again.
    """
    subjects = [Subject(f"{key}_fused", f"{label}, fused", make_work(copy.deepcopy(model).fuse()), model,
                        same_work_as=key)]
    if compile:
        compiled = make_work(copy.deepcopy(model).fuse(compile=True))
        try:
            compiled()
        except Exception as e:  # compilation needs a C++ toolchain and supported ops: report, go on
            notes.append(f"{label}: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        else:
            subjects.append(Subject(f"{key}_compiled", f"{label}, fused + torch.compile", compiled, model,
                                    same_work_as=key))
    return subjects


def _random_input(batch: int, size: int, device: torch.device) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)


def backbone_group(size: int, batch: int, device: torch.device, *, compile: bool, runtimes: bool) -> Group:
    """MobileNetV2 features against torchvision, timm and smp; MobileNetV1 against timm's ``mobilenetv1_100`` (the
    same network); ShuffleNetV1, which no installed library builds, against torchvision's MobileNetV2 at equal input.

    torchvision's ``features`` and smp's encoder end with the 1280-channel 1x1 conv; timm's ``features_only``
    stops at the 320-channel stage. Ours is timed both ways (``+ 1280 conv``: the head tap selected). ``compile``
    adds the compiled fast path, ``runtimes`` the ONNX Runtime rows.
    """
    x, notes = _random_input(batch, size, device), []
    ours = create_backbone(MNV2).to(device).eval()
    indices = [*ours.out_indices, len(ours.feature_info) - 1]
    ours_head = create_backbone(MNV2, out_indices=indices).to(device).eval()
    shuffle = create_backbone(SHUFFLENET).to(device).eval()
    mnv1 = create_backbone(MNV1).to(device).eval()
    refs = {"torchvision": torchvision.models.mobilenet_v2().features,
            "timm": timm.create_model("mobilenetv2_100", features_only=True),
            "smp": smp.encoders.get_encoder("mobilenet_v2", weights=None),
            "timm_v1": timm.create_model("mobilenetv1_100", features_only=True)}
    refs = {k: m.to(device).eval() for k, m in refs.items()}
    labels = {"torchvision": "torchvision mobilenet_v2().features", "timm": "timm mobilenetv2_100 features_only",
              "smp": "smp mobilenet_v2 encoder", "timm_v1": "timm mobilenetv1_100 features_only"}
    subjects = [Subject(k, labels[k], _inference(m, x), m, role="reference") for k, m in refs.items()]
    subjects += [Subject("ours", f"{MNV2} (5 stages)", _inference(ours, x), ours),
                 Subject("ours_head", f"{MNV2} + 1280 conv", _inference(ours_head, x), ours_head),
                 Subject("shufflenet", SHUFFLENET, _inference(shuffle, x), shuffle),
                 Subject("mobilenetv1", MNV1, _inference(mnv1, x), mnv1)]
    make = functools.partial(_inference, x=x)
    subjects += fast_paths("ours_head", f"{MNV2} + 1280 conv", ours_head, make, compile=compile, notes=notes)
    subjects += fast_paths("shufflenet", SHUFFLENET, shuffle, make, compile=False, notes=notes)
    subjects += fast_paths("mobilenetv1", MNV1, mnv1, make, compile=compile, notes=notes)
    if runtimes:
        subjects += runtime_subjects("ours_head", f"{MNV2} + 1280 conv", ours_head, x, notes=notes)
        subjects += runtime_subjects("mobilenetv1", MNV1, mnv1, x, notes=notes)
    pairs = [("ours", "timm"), ("ours_head", "torchvision"), ("ours_head", "smp")]
    pairs += [(s.key, ref) for s in subjects if s.key.startswith("ours_head_") for ref in refs if ref != "timm_v1"]
    pairs += [("shufflenet", "torchvision"), ("shufflenet_fused", "torchvision")]
    pairs += [(s.key, "timm_v1") for s in subjects if s.key.startswith("mobilenetv1")]
    return Group(f"Backbone features {size}x{size}, batch {batch}", f"backbone {size} b{batch}", subjects,
                 [Comparison(o, r) for o, r in pairs], notes)


def _smp_deeplab(output_stride: int) -> nn.Module:
    return smp.DeepLabV3Plus("mobilenet_v2", encoder_weights=None, encoder_output_stride=output_stride,
                             classes=NUM_CLASSES)


def _our_deeplabs(output_stride: int, *, lighter: bool = False) -> dict[str, tuple[str, nn.Module]]:
    """Our DeepLabV3+ configurations on MobileNetV2 1.0: published plain head, separable head, separable head on
    the 1280 conv (smp's mobilenet_v2 encoder ends with that conv and feeds it to ASPP); ``lighter`` adds the
    separable head on MobileNetV2 0.5 and on ShuffleNetV1."""
    build = functools.partial(create_segmenter, num_classes=NUM_CLASSES, output_stride=output_stride)
    configs = {"plain": ("plain 256-ch head (published)", build(MNV2)),
               "separable": ("separable head", build(MNV2, separable=True)),
               "separable_1280": ("separable head on the 1280 conv",
                                  build(MNV2, separable=True, aspp_input="final"))}
    if lighter:
        for key, name in (("mobilenetv2_050", "ld_mobilenetv2_050"), ("shufflenet", SHUFFLENET)):
            configs[key] = (f"{name}, separable head", build(name, separable=True))
    return configs


def deeplab_group(size: int, output_stride: int, device: torch.device, *, compile: bool, runtimes: bool) -> Group:
    """DeepLabV3+ inference at ``size``, batch 1: our configurations against ``smp.DeepLabV3Plus``; ours are on
    MobileNetV2 1.0 unless a backbone is named."""
    x, notes = _random_input(1, size, device), []
    ref = _smp_deeplab(output_stride).to(device).eval()
    subjects = [Subject("smp", f"smp DeepLabV3Plus mobilenet_v2 OS{output_stride}", _inference(ref, x), ref,
                        role="reference")]
    make = functools.partial(_inference, x=x)
    for key, (label, model) in _our_deeplabs(output_stride, lighter=True).items():
        model = model.to(device).eval()
        subjects.append(Subject(key, f"ours OS{output_stride}, {label}", _inference(model, x), model))
        if key != "plain":
            subjects += fast_paths(key, f"ours OS{output_stride}, {label}", model, make,
                                   compile=compile and key in NEAREST_SMP, notes=notes)
        if runtimes and key in NEAREST_SMP:
            subjects += runtime_subjects(key, f"ours OS{output_stride}, {label}", model, x, notes=notes)
    return Group(f"DeepLabV3+ {size}x{size}, output stride {output_stride}, batch 1", f"DeepLabV3+ {size}",
                 subjects,
                 [Comparison(s.key, "smp") for s in subjects[1:]], notes)


def train_step(model: nn.Module, x: Tensor, target: Tensor) -> Callable[[], object]:
    """One SGD step of a segmenter on ``x``: cross-entropy against ``target`` (255 ignored), backward, update."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def work() -> object:
        loss = F.cross_entropy(model(x), target, ignore_index=255)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return None
    return work


def train_step_group(batch: int, crop: int, device: torch.device) -> Group:
    """One SGD step (forward, cross-entropy, backward, update) of DeepLabV3+ OS16 against smp's.

    MACs are those of the forward pass: torch's flop counter multiplies the weight-gradient MACs of a grouped
    convolution by its group count (it ignores ``groups`` in the backward formula), which would make depthwise
    networks look dozens of times heavier. The backward pass costs about twice the forward for every conv.
    """
    x = _random_input(batch, crop, device)
    target = torch.randint(0, NUM_CLASSES, (batch, crop, crop), generator=torch.Generator().manual_seed(0))
    target = target.to(device)
    models = {"smp": ("smp DeepLabV3Plus mobilenet_v2 OS16", _smp_deeplab(16))}
    models.update({k: (f"ours OS16, {label}", m) for k, (label, m) in _our_deeplabs(16).items()})
    subjects, comparisons = [], []
    for key, (label, model) in models.items():
        role = "reference" if key == "smp" else "ours"
        for layout in ("", "_cl"):
            if layout and key == "plain":
                continue
            net, inputs = copy.deepcopy(model).to(device).train(), x
            if layout:  # what seg_train runs on CUDA (its --channels-last default there), for smp too
                net, inputs = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            text = f"{label}, channels_last" if layout else label
            subjects.append(Subject(key + layout, text, train_step(net, inputs, target), net, role=role,
                                    counted=_forward(net, inputs), same_work_as=key if layout else None))
            if role == "ours":
                comparisons += [Comparison(key + layout, "smp")] + ([Comparison(key + layout, "smp_cl")] if layout
                                                                      else [])
    return Group(f"DeepLabV3+ training step, batch {batch}, crop {crop}x{crop}, SGD", "train step", subjects,
                 comparisons, ["GMACs: the forward pass of the step. channels_last: model and batch in NHWC, as "
                               "seg_train runs them on CUDA; on CPU it trains in NCHW, where BatchNorm is precise."])
