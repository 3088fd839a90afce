"""MobileNetV1: the paper's architecture, parity with timm, and the checkpoint layouts people have (timm, the marvis
port that pytorch-ssd uses, the kuangliu CIFAR tutorial), each against a reference built here or by timm."""
from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from conftest import randomize_bn
from pytorch_ssd_reference import MNV1_CHANNELS, MNV1_STRIDES, mobilenet_v1_layers
from safetensors.torch import save_file
from torch import nn

from backbones import create_backbone
from backbones.smp_plugin import load_encoder_weights
from backbones.weights import CIFAR10, IMAGENET, INCEPTION, DownloadError



def test_architecture_is_paper_table_1():
    model = create_backbone("ld_mobilenetv1_100")
    blocks = [block for stage in model.stages for block in stage]
    assert (model.stem.conv.out_channels, model.stem.conv.stride) == (32, (2, 2))
    assert [b.pw.conv.out_channels for b in blocks] == MNV1_CHANNELS
    assert [b.dw.conv.stride[0] for b in blocks] == MNV1_STRIDES
    assert all(b.dw.conv.groups == b.dw.conv.in_channels for b in blocks)
    assert (model.channels, model.strides) == ([64, 128, 256, 512, 1024], [2, 4, 8, 16, 32])
    assert [model.feature_info[i].channels for i in model.detection_indices] == [512, 1024]
    assert isinstance(model.stem.act, nn.ReLU)
    assert isinstance(create_backbone("ld_mobilenetv1_100", act_layer="relu6").stem.act, nn.ReLU6)
    assert create_backbone("ld_mobilenetv1_025").channels == [16, 32, 64, 128, 256]
    # With a 1000-class classifier the parameter count is timm's (4.23M, the paper's 4.2M).
    for width in ("100", "125"):
        ours = sum(p.numel() for p in timm.create_model(f"ld_mobilenetv1_{width}").parameters())
        assert ours == sum(p.numel() for p in timm.create_model(f"mobilenetv1_{width}").parameters())


def _timm_reference(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(1)
    return randomize_bn(timm.create_model(name, **kwargs)).eval()


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("width", ["100", "125"])
def test_timm_parity(width: str, output_stride: int) -> None:
    ref = _timm_reference(f"mobilenetv1_{width}", features_only=True, output_stride=output_stride)
    ours = create_backbone(f"ld_mobilenetv1_{width}", pretrained=ref.state_dict(), output_stride=output_stride,
                           act_layer="relu6").eval()
    assert ours.preprocessing == INCEPTION
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_timm_classifier_parity_and_relu_warning(tmp_path) -> None:
    ref = _timm_reference("mobilenetv1_100")
    torch.save(ref.state_dict(), tmp_path / "mnv1.pth")
    ours = timm.create_model("ld_mobilenetv1_100", pretrained=True, act_layer="relu6",
                             pretrained_cfg_overlay=dict(file=str(tmp_path / "mnv1.pth"))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="trained with ReLU6 but this model uses act_layer='relu'"):
        create_backbone("ld_mobilenetv1_100", pretrained=ref.state_dict())


def test_timm_head_conv_variant_loads_features_only(tmp_path) -> None:
    """mobilenetv1_100h adds a 1x1 conv after the last tap: the taps load exactly, its classifier cannot."""
    ref = _timm_reference("mobilenetv1_100h")
    ours = create_backbone("ld_mobilenetv1_100", pretrained=ref.state_dict(), act_layer="relu6").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[-1], ref.forward_intermediates(x, intermediates_only=True)[-1])
    torch.save(ref.state_dict(), tmp_path / "h.pth")
    overlay = dict(file=str(tmp_path / "h.pth"))
    with pytest.raises(ValueError, match="'conv_head' module between the last tap and its classifier"):
        timm.create_model("ld_mobilenetv1_100", pretrained=True, pretrained_cfg_overlay=overlay)


def test_named_source_builds_with_relu6_and_fails_offline(monkeypatch, tmp_path) -> None:
    ref = _timm_reference("mobilenetv1_100", features_only=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda repo, filename: str(tmp_path / filename))
    model = create_backbone("ld_mobilenetv1_100", pretrained=True).eval()
    assert model.act_layer == "relu6" and model.preprocessing == INCEPTION
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], ref(x)[-1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'timm_ra4_in1k' weights of ld_mobilenetv1_100 were trained with act_layer="):
        create_backbone("ld_mobilenetv1_100", pretrained="timm_ra4_in1k", act_layer="relu")
    with pytest.raises(ValueError, match="trained with act_layer='relu6', not act_layer='relu'; build the model with"):
        load_encoder_weights(smp.Unet("ld_mobilenetv1_100", encoder_weights=None), "timm_ra4_in1k")  # built with ReLU

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    with pytest.raises(DownloadError, match=r"could not download hf-hub:timm/mobilenetv1_125\S+ \(OSError") as info:
        create_backbone("ld_mobilenetv1_125", pretrained=True)
    assert "\n" not in str(info.value)


def test_timm_tag_builds_with_relu6(monkeypatch) -> None:
    """``timm.create_model(name.tag, pretrained=True)`` builds as the tagged weights were trained (hub stubbed)."""
    ref = _timm_reference("mobilenetv1_100")
    asked = []

    def from_hub(location, *args, **kwargs):
        asked.append(location)
        return ref.state_dict()

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", from_hub)
    model = timm.create_model("ld_mobilenetv1_100.timm_ra4_in1k", pretrained=True).eval()
    assert asked == ["timm/mobilenetv1_100.ra4_e3600_r224_in1k"]
    assert model.act_layer == "relu6" and model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=0)
    assert timm.create_model("ld_mobilenetv1_100").act_layer == "relu"


# --- the marvis port (pytorch-ssd's vision/nn/mobilenet.py): model.N Sequentials, fc classifier -------------------
@pytest.fixture(scope="module")
def marvis() -> nn.Module:
    torch.manual_seed(2)
    net = nn.Module()
    net.model = mobilenet_v1_layers()
    net.fc = nn.Linear(1024, 1000)
    return randomize_bn(net).eval()


@pytest.mark.parametrize("form", ["classifier file", "base-net file", "ssd base_net", "DataParallel"])
def test_marvis_layout(marvis, form: str) -> None:
    state = marvis.state_dict()
    body = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    ssd = {**{f"base_net.{k}": v for k, v in body.items()}, "extras.0.0.weight": torch.zeros(1)}  # extras ignored
    checkpoint = {"classifier file": state, "base-net file": body, "ssd base_net": ssd,
                  "DataParallel": {"state_dict": {f"module.{k}": v for k, v in state.items()}}}[form]
    ours = create_backbone("ld_mobilenetv1_100", pretrained=checkpoint, out_indices=[3, 4]).eval()
    assert ours.preprocessing == IMAGENET
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        expected = [marvis.model[:12](x)]
        expected.append(marvis.model[12:](expected[0]))
        for a, b in zip(ours(x), expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --- the kuangliu CIFAR tutorial port: conv1/bn1, layers.N.conv1/bn1/conv2/bn2, linear; stem stride 1 ------------
class TutorialBlock(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False)
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv2 = nn.Conv2d(inp, oup, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TutorialMobileNet(nn.Module):
    def __init__(self, stem_stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        chans = [32, *MNV1_CHANNELS]
        self.layers = nn.Sequential(*[TutorialBlock(i, o, s) for i, o, s in zip(chans, chans[1:], MNV1_STRIDES)])
        self.linear = nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.relu(self.bn1(self.conv1(x))))


def test_tutorial_layout_loads_with_our_stem_stride() -> None:
    """Same tensors; only the stem stride differs (1 in the CIFAR port, 2 here), so each map is half the size."""
    torch.manual_seed(3)
    ref = randomize_bn(TutorialMobileNet()).eval()
    ours = create_backbone("ld_mobilenetv1_100", pretrained=ref.state_dict(), out_indices=[4]).eval()
    assert ours.preprocessing == CIFAR10
    strided = TutorialMobileNet(stem_stride=2).eval()
    strided.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], strided(x), atol=1e-5, rtol=0)
        assert ref(x).shape[-1] == 2 * ours(x)[0].shape[-1]


def test_wrong_layouts_and_widths_are_reported(marvis) -> None:
    with pytest.raises(ValueError, match=r"a 'marvis' checkpoint cannot load into MobileNetV2; layouts it understands"):
        create_backbone("ld_mobilenetv2_100", pretrained=marvis.state_dict())
    with pytest.raises(ValueError, match=r"'torchvision' checkpoint cannot load into MobileNetV1; layouts it "
                                         r"understands: \['lightdense', 'timm', 'marvis', 'kuangliu'\]"):
        create_backbone("ld_mobilenetv1_100", pretrained=torchvision.models.mobilenet_v2().state_dict())
    with pytest.raises(ValueError, match=r"timm checkpoint does not match ld_mobilenetv1_100: missing \[.+unexpected"):
        create_backbone("ld_mobilenetv1_100", pretrained=timm.create_model("mobilenetv2_100").state_dict())
    with pytest.raises(ValueError, match=r"marvis checkpoint does not match ld_mobilenetv1_050: .*shape mismatch"):
        create_backbone("ld_mobilenetv1_050", pretrained=marvis.state_dict())
    with pytest.raises(ValueError, match="unrecognised checkpoint layout.*marvis or kuangliu"):
        create_backbone("ld_mobilenetv1_100", pretrained={"0.0.bias": torch.zeros(1)})
