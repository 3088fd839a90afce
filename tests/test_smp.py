"""Every backbone through segmentation_models_pytorch: native encoders, the ``tu-`` route, weights, imports."""
from __future__ import annotations

import subprocess
import sys

import pytest
import segmentation_models_pytorch as smp
import torch

from backbones import create_backbone, list_backbones
from backbones.smp_plugin import SmpEncoder, load_encoder_weights

MNV2, SNV1 = "ld_mobilenetv2_100", "ld_shufflenetv1_g3_050"
PAIR = (MNV2, SNV1)
ARCHS = ("Unet", "FPN", "PSPNet", "Linknet", "UnetPlusPlus", "MAnet", "PAN", "DeepLabV3", "DeepLabV3Plus")


@pytest.mark.parametrize("name", list_backbones())
def test_every_name_is_an_smp_encoder(name):
    encoder = smp.encoders.get_encoder(name).eval()
    with torch.device("meta"):  # only its feature_info is needed
        ours = create_backbone(name)
    assert isinstance(encoder, SmpEncoder) and encoder.out_channels == [3, *ours.channels]
    with torch.no_grad():
        feats = encoder(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == encoder.out_channels
    assert [64 // f.shape[-1] for f in feats] == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_is_our_dilation(name, output_stride):
    """smp's encoder at output stride 8/16 computes exactly our dilated backbone (AvgPool shortcuts included)."""
    encoder = smp.encoders.get_encoder(name, output_stride=output_stride).eval()
    ours = create_backbone(name, output_stride=output_stride).eval()
    ours.load_state_dict(encoder.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = encoder(x)
        expected = ours(x)
    assert [64 // f.shape[-1] for f in feats] == [min(s, output_stride) for s in (1, 2, 4, 8, 16, 32)]
    for a, b in zip(feats[1:], expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize(("depth", "in_channels"), [(3, 1), (4, 4), (5, 3)])
def test_depth_builds_only_what_it_returns(name, depth, in_channels):
    encoder = smp.encoders.get_encoder(name, depth=depth, in_channels=in_channels, output_stride=16)
    feats = encoder(torch.randn(2, in_channels, 64, 64))
    assert len(feats) == depth + 1 and encoder.output_stride == min(16, 2 ** depth)
    sum(f.mean() for f in feats[1:]).backward()
    assert all(p.grad is not None for p in encoder.parameters())  # no unused parameters (DDP-safe)


def test_bad_arguments_say_what_is_valid():
    with pytest.raises(ValueError, match=r"depth must be an int in \[1, 5\]"):
        smp.encoders.get_encoder(MNV2, depth=6)
    with pytest.raises(ValueError, match="output_stride must be one of"):
        smp.encoders.get_encoder(MNV2, output_stride=4)
    with pytest.raises(ValueError, match="built with output stride 32"):
        smp.encoders.get_encoder(MNV2).make_dilated(16)
    with pytest.raises(ValueError, match="tu-"):
        load_encoder_weights(smp.Unet("resnet18", encoder_weights=None), "unused.pth")


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_smp_architecture_runs(name, arch):
    kwargs = {"encoder_output_stride": 16} if arch in ("PAN", "DeepLabV3", "DeepLabV3Plus") else {}
    model = getattr(smp, arch)(encoder_name=name, encoder_weights=None, classes=21, **kwargs).eval()
    size = 128 if arch == "PAN" else 64  # PAN's pyramid pools the stride-16 map down three more times
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 21, size, size)


@pytest.mark.parametrize(("arch", "output_stride"), [("DeepLabV3Plus", 16), ("DeepLabV3Plus", 8), ("Unet", None),
                                                     ("FPN", None)])
def test_timm_universal_route(arch, output_stride):
    kwargs = {"encoder_output_stride": output_stride} if output_stride else {}
    model = getattr(smp, arch)(encoder_name=f"tu-{SNV1}", encoder_weights=None, classes=3, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_load_encoder_weights_from_a_file(torchvision_mnv2):
    reference, path = torchvision_mnv2
    model = smp.Unet(MNV2, encoder_weights=None, classes=2)
    assert load_encoder_weights(model, path) is model
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.eval()(x)[-1], reference.features[:18](x))
    assert model.encoder.preprocessing.mean == (0.485, 0.456, 0.406)


def test_timm_universal_route_loads_a_file(torchvision_mnv2):
    reference, path = torchvision_mnv2
    model = smp.Unet(f"tu-{MNV2}", encoder_weights=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.eval()(x)[-1], reference.features[:18](x))


@pytest.mark.parametrize("first", ["backbones", "timm", "segmentation_models_pytorch"])
def test_import_registers_once_without_warnings(first):
    """Any import order, a second import and a reload of the plugins: one registration, no warning."""
    code = f"""
import importlib, {first}
import backbones, timm, segmentation_models_pytorch as smp
import backbones
from backbones import smp_plugin, timm_plugin
importlib.reload(timm_plugin), importlib.reload(smp_plugin)
names = backbones.list_backbones()
assert sorted(timm.list_models("ld_*")) == names, timm.list_models("ld_*")
assert sorted(n for n in smp.encoders.encoders if n.startswith("ld_")) == names
"""
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_smp_default_imagenet_weights_load_through_our_loader(monkeypatch, tmp_path):
    """smp's default encoder_weights="imagenet": the named hub source, in timm's layout, reaches our converter."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    reference = timm.create_model("mobilenetv2_100", pretrained=False)
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    asked = []

    def hub(repo_id: str, filename: str, **kwargs) -> str:
        asked.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub)
    model = smp.Unet(MNV2, classes=2)  # encoder_weights="imagenet" is smp's default
    assert ("timm/mobilenetv2_100.ra_in1k", "model.safetensors") in asked
    expected = create_backbone(MNV2, pretrained=str(tmp_path / "model.safetensors")).state_dict()
    got = model.encoder.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert model.encoder.preprocessing.mean == (0.485, 0.456, 0.406)


def test_smp_default_weights_fail_clearly_offline_or_when_there_are_none(monkeypatch):
    from backbones.weights import DownloadError

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    with pytest.raises(DownloadError, match="could not download hf-hub:timm/mobilenetv2_100.ra_in1k .*local path"):
        smp.Unet(MNV2)
    with pytest.raises(ValueError, match="'ld_shufflenetv1_g3_050' has no ImageNet weights .*encoder_weights=None"):
        smp.Unet(SNV1)
    with pytest.raises(ValueError, match="'ld_mobilenetv1_100' were trained with act_layer='relu6'.*'tu-"):
        smp.Unet("ld_mobilenetv1_100")  # smp builds it with the default ReLU
