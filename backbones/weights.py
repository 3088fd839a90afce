"""Pretrained weights: named sources with their preprocessing, reading checkpoints, and loading any known layout."""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import torch
from torch import Tensor

from .base import Backbone
from .layouts import detect_layout, layout_pairs, rename
from .mobilenetv1 import MobileNetV1


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a set of weights: ``(pixels / (255 / input_range) - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: str = "RGB"
    input_range: float = 1.0


IMAGENET = Preprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's MobileNetV1 weights: pixels to [-1, 1]
# The kuangliu CIFAR tutorial trains with CIFAR-10 statistics.
CIFAR10 = Preprocessing((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
# The official ShuffleNetV1 release was trained on BGR pixels in 0..255 with no mean/std. Its stem is flipped to
# RGB on load (exact: the first conv is linear in its input channels), so every model here takes RGB.
MEGVII = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), color="RGB", input_range=255.0)
LAYOUT_PREPROCESSING = {"megvii": MEGVII, "kuangliu": CIFAR10}
BGR_LAYOUTS = ("megvii",)
RELU6 = {"act_layer": "relu6"}


@dataclass(frozen=True)
class WeightSource:
    """A named set of ImageNet weights: an http(s) URL or ``hf-hub:<repo>``, and its published top-1 if known.

    ``arch``: architecture arguments the weights were trained with (``create_backbone`` builds with them).
    """

    location: str
    top1: float | None = None
    preprocessing: Preprocessing = IMAGENET
    arch: Mapping[str, Any] = field(default_factory=dict)


_TV = "https://download.pytorch.org/models/"
# Per backbone name, the named sources (the first one is what ``pretrained=True`` loads).
PRETRAINED: dict[str, dict[str, WeightSource]] = {
    "ld_mobilenetv1_100": {"timm_ra4_in1k": WeightSource("hf-hub:timm/mobilenetv1_100.ra4_e3600_r224_in1k", 75.39,
                                                         INCEPTION, RELU6)},
    "ld_mobilenetv1_125": {"timm_ra4_in1k": WeightSource("hf-hub:timm/mobilenetv1_125.ra4_e3600_r224_in1k", 76.92,
                                                         INCEPTION, RELU6)},
    "ld_mobilenetv2_100": {"timm_ra_in1k": WeightSource("hf-hub:timm/mobilenetv2_100.ra_in1k", 72.91),
                           "torchvision_v2": WeightSource(_TV + "mobilenet_v2-7ebf99e0.pth", 72.15),
                           "torchvision_v1": WeightSource(_TV + "mobilenet_v2-b0353104.pth", 71.88)},
    "ld_mobilenetv2_050": {"timm_lamb_in1k": WeightSource("hf-hub:timm/mobilenetv2_050.lamb_in1k")},
    "ld_mobilenetv2_140": {"timm_ra_in1k": WeightSource("hf-hub:timm/mobilenetv2_140.ra_in1k")},
}
REMOTE_PREFIXES = ("http://", "https://", "hf-hub:")
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
WRAPPER_PREFIXES = ("backbone.", "encoder.", "model.", "base_net.")
# A bare nn.Sequential of layers (``0.0.weight``: the SSD ports' ``base_net``, pytorch-ssd's base-net files) sits
# under ``features.`` in the flat MobileNetV2 port and under ``model.`` in the MobileNetV1 port.
SEQUENTIAL_ROOTS = ("features.", "model.")


class DownloadError(RuntimeError):
    """A named source, URL or hub file could not be fetched (offline, or not found there)."""


def download(location: str, filename: str = "model.safetensors") -> Path:
    """Fetch an http(s) URL (torch.hub cache) or the file ``filename`` of an ``hf-hub:<repo>`` id; offline or not
    found there gives one :class:`DownloadError` line."""
    try:
        if location.startswith("hf-hub:"):
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(location[len("hf-hub:"):], filename))
        name = location.rsplit("/", 1)[-1]
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(location, str(path), progress=False)
        return path
    except Exception as e:  # urllib, requests and hub errors alike: say what to do instead
        raise DownloadError(
            f"could not download {location} ({type(e).__name__}: {str(e)[:200]}). If this machine is offline, "
            f"download the file elsewhere and pass its local path instead") from None


def read_checkpoint(source: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a path (.pth/.pt/.bin/.safetensors), an http(s) URL or an ``hf-hub:`` id.

    Training checkpoints are unwrapped (``state_dict``, ``model``, ``state_dict_ema``); non-tensor entries dropped.
    """
    text = str(source)
    path = download(text) if text.startswith(REMOTE_PREFIXES) else Path(source)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path} (give a file path, an http(s) URL or a state dict)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch, pickle, zipfile and safetensors each raise their own types
        raise ValueError(f"could not read weights {path}: {load_error_reason(e)}; expected a torch.save state dict "
                         "(.pth/.pt/.bin) or a .safetensors file") from None
    return unwrap(obj, str(path))


def load_error_reason(error: Exception) -> str:
    """Why a file did not load, in a few words (torch's own text advises ``weights_only=False``: never here)."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in text:
        return "it holds Python objects other than tensors and plain types, which are not loaded (unsafe)"
    if isinstance(error, (EOFError, zipfile.BadZipFile)) or "EOF" in text or "zip archive" in text:
        return "the file is empty or truncated"
    return f"the file is corrupt or of another format ({type(error).__name__})"


def unwrap(obj: object, what: str = "state dict") -> dict[str, Tensor]:
    """The tensors of a state dict, looking inside the usual training-checkpoint wrappers."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)} if isinstance(obj, Mapping) else {}
    if not tensors:
        raise ValueError(f"{what} holds no tensors (type {type(obj).__name__}); expected a state dict")
    return tensors


def _find_layout(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Tensor]]:
    """Strip DataParallel and wrapper prefixes until a known layout appears."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    views = [sd] + [{k[len(p):]: v for k, v in sd.items() if k.startswith(p)} for p in WRAPPER_PREFIXES]
    for view in filter(None, views):
        candidates = [view]
        if next(iter(view)).split(".")[0].isdigit():
            candidates += [{root + k: v for k, v in view.items()} for root in SEQUENTIAL_ROOTS]
        for candidate in candidates:
            if (layout := detect_layout(candidate)) is not None:
                return layout, candidate
    raise ValueError("unrecognised checkpoint layout; expected lightdense, torchvision, timm, the flat MobileNetV2 "
                     "port, the official ShuffleNetV1 release, or the marvis or kuangliu MobileNetV1 ports. "
                     f"First keys: {list(state_dict)[:6]}")


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Turn an RGB stem ``(O, 3, k, k)`` into ``(O, in_chans, k, k)``: sum for 1 channel, else repeat RGB and
    rescale by ``3 / in_chans`` so activations keep their scale."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans)


def convert_state_dict(model: Backbone, state_dict: Mapping[str, Tensor], *,
                       keep_classifier: bool = False) -> dict[str, Tensor]:
    """Rename ``state_dict`` (any known layout) to ``model``'s keys; check every key and shape.

    Classifier keys are dropped (kept as ``classifier.*`` with ``keep_classifier``), as are keys of modules that
    ``out_indices`` left unbuilt. Stems trained on BGR input are flipped to take RGB. Anything else missing,
    unexpected or of the wrong shape raises a ValueError.
    """
    return _convert(model, state_dict, keep_classifier)[1]


def _convert(model: Backbone, state_dict: Mapping[str, Tensor],
             keep_classifier: bool) -> tuple[str, dict[str, Tensor]]:
    layout, sd = _find_layout(state_dict)
    out, unexpected = rename(sd, layout_pairs(model, layout), layout, keep_classifier)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    stem = "stem.conv.weight"
    if layout in BGR_LAYOUTS and stem in out:
        out[stem] = out[stem].flip(1)
    if stem in out and out[stem].shape[1] == 3 and model.in_chans != 3:
        out[stem] = adapt_input_conv(out[stem], model.in_chans)
    extra = {k for k in out if k not in expected and not k.startswith("classifier.")}
    out = {k: v for k, v in out.items() if k not in extra}  # modules not built for these out_indices
    missing = [k for k in expected if k not in out and not k.endswith("num_batches_tracked")]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in out.items() if k in expected and v.shape != expected[k].shape]
    if unexpected or missing or wrong:
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(f"{layout} checkpoint does not match {name}: missing {sorted(missing)[:8]}, "
                         f"unexpected {sorted(unexpected)[:8]}, shape mismatch {wrong[:8]}")
    for k in expected:
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = expected[k]
    return layout, out


def named_source(name: str, pretrained: object) -> tuple[str, WeightSource] | None:
    """``(tag, source)`` if ``pretrained`` selects a named source of backbone ``name`` (``True``: the first)."""
    named = PRETRAINED.get(name, {})
    tag = next(iter(named), None) if pretrained is True else pretrained if isinstance(pretrained, str) else None
    return (tag, named[tag]) if tag in named else None


def check_source_arch(name: str, pretrained: object, arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` completed with what the named source ``pretrained`` was trained with (e.g. ``act_layer="relu6"``).

    A conflicting value in ``arch`` raises: the weights would load but compute something else.
    """
    found = named_source(name, pretrained)
    if found is None:
        return dict(arch)
    tag, source = found
    for arg, value in source.arch.items():
        if arg in arch and arch[arg] != value:
            raise ValueError(f"the {tag!r} weights of {name} were trained with {arg}={value!r}, not {arg}="
                             f"{arch[arg]!r}; build the model with {arg}={value!r} or load other weights")
    return {**source.arch, **arch}


def _layout_preprocessing(model: Backbone, layout: str) -> Preprocessing:
    """What weights in ``layout`` expect; timm's MobileNetV1 weights also need ReLU6, so a ReLU model warns."""
    if layout == "timm" and isinstance(model, MobileNetV1):
        if model.act_layer != "relu6":
            warnings.warn("timm's MobileNetV1 weights were trained with ReLU6 but this model uses "
                          f"act_layer={model.act_layer!r}; build it with act_layer='relu6' unless these weights "
                          "were trained with ReLU", stacklevel=3)
        return INCEPTION
    return LAYOUT_PREPROCESSING.get(layout, IMAGENET)


def load_pretrained(model: Backbone, source: bool | str | os.PathLike | Mapping[str, Tensor]) -> Backbone:
    """Load ``source`` into ``model`` and set ``model.preprocessing``.

    ``source``: ``True`` (the default named source), a named source of ``PRETRAINED[model.name]``, a path, an
    http(s) URL, or a state dict. A named source trained with other architecture arguments than ``model`` raises.
    """
    name = getattr(model, "name", "")
    named = PRETRAINED.get(name, {})
    preprocessing = None
    if source is True and not named:
        raise ValueError(f"no named pretrained weights for {model.name}; pass a path, URL or state dict")
    if (found := named_source(name, source)) is not None:
        check_source_arch(name, source, {arg: getattr(model, arg) for arg in found[1].arch if hasattr(model, arg)})
        source, preprocessing = found[1].location, found[1].preprocessing
    elif isinstance(source, str) and not os.path.exists(source) and not source.startswith(REMOTE_PREFIXES) and named:
        raise ValueError(f"{source!r} is neither a file nor a named source of {model.name} ({list(named)})")
    state_dict = unwrap(source) if isinstance(source, Mapping) else read_checkpoint(source)
    try:
        layout, converted = _convert(model, state_dict, keep_classifier=False)
    except ValueError as e:
        if isinstance(source, Mapping):
            raise
        raise ValueError(f"weights {source}: {e}") from None
    model.load_state_dict(converted)
    model.preprocessing = preprocessing or _layout_preprocessing(model, layout)
    return model
