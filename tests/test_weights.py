"""Weight loading: parity with torchvision and timm, every layout, every source kind."""
from __future__ import annotations

import re

import pytest
import timm
import torch
import torchvision
from conftest import randomize_bn
from safetensors.torch import save_file

from backbones import create_backbone
from backbones.weights import IMAGENET, adapt_input_conv, convert_state_dict

ALL_MOBILENET_TAPS = [0, 1, 2, 3, 4, 5, 6]


def torchvision_taps(model: torchvision.models.MobileNetV2, x: torch.Tensor) -> list[torch.Tensor]:
    """torchvision features[1, 3, 6, 13], the expansion of features[14], features[17, 18]."""
    taps = []
    for i, layer in enumerate(model.features):
        if i == 14:
            taps.append(layer.conv[0](x))
        x = layer(x)
        if i in (1, 3, 6, 13, 17, 18):
            taps.append(x)
    return taps


@pytest.fixture(scope="module")
def tv_model() -> torchvision.models.MobileNetV2:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.mobilenet_v2()).eval()


def to_flat(tv_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rewrite torchvision keys in the original port's flat numbering (conv.{0,1,3,4,6,7})."""
    out = {}
    for key, value in tv_state.items():
        m = re.match(r"features\.(\d+)\.conv\.(\d+)(?:\.(\d+))?\.(.+)", key)
        if m and int(m.group(1)) > 0:
            block, i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            nested = 1 if block == 1 else 2  # nested conv-BN-act modules before the plain conv + BN
            index = 3 * i + int(j) if j is not None else 3 * nested + (i - nested)
            key = f"features.{block}.conv.{index}.{rest}"
        out[key] = value
    return out


def test_torchvision_parity_all_taps(tv_model) -> None:
    ours = create_backbone("ld_mobilenetv2_100", pretrained=tv_model.state_dict(),
                           out_indices=ALL_MOBILENET_TAPS).eval()
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        for a, b in zip(ours(x), torchvision_taps(tv_model, x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert ours.preprocessing == IMAGENET


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("width", ["100", "035", "140"])
def test_timm_parity(width: str, output_stride: int) -> None:
    torch.manual_seed(1)
    ref = randomize_bn(timm.create_model(f"mobilenetv2_{width}", features_only=True,
                                         output_stride=output_stride)).eval()
    ours = create_backbone(f"ld_mobilenetv2_{width}", pretrained=ref.state_dict(), output_stride=output_stride)
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), ref(x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prefix", ["", "module.", "backbone.", "base_net."])
def test_flat_layout_with_prefixes(tv_model, prefix: str) -> None:
    flat = to_flat(tv_model.state_dict())
    if prefix == "base_net.":
        flat = {k.replace("features.", "base_net.", 1): v for k, v in flat.items() if k.startswith("features.")}
        flat["extras.0.weight"] = torch.zeros(1)  # the detector's own keys are ignored
    else:
        flat = {prefix + k: v for k, v in flat.items()}
    ours = create_backbone("ld_mobilenetv2_100", pretrained={"state_dict": flat}, out_indices=[0, 5]).eval()
    ref = create_backbone("ld_mobilenetv2_100", pretrained=tv_model.state_dict(), out_indices=[0, 5]).eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(ours(x), ref(x)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_path_and_safetensors(tmp_path, tv_model) -> None:
    torch.save({"model": tv_model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    save_file({k: v.contiguous() for k, v in timm.create_model("mobilenetv2_100").state_dict().items()},
              str(tmp_path / "model.safetensors"))
    for file in ("ckpt.pth", "model.safetensors"):
        model = create_backbone("ld_mobilenetv2_100", pretrained=str(tmp_path / file))
        assert model.preprocessing == IMAGENET


def test_in_chans_adapts_rgb_stem(tv_model) -> None:
    rgb = tv_model.features[0][0].weight
    for in_chans in (1, 2, 4):
        model = create_backbone("ld_mobilenetv2_100", pretrained=tv_model.state_dict(), in_chans=in_chans)
        assert model.stem.conv.weight.shape[1] == in_chans
    one = create_backbone("ld_mobilenetv2_100", pretrained=tv_model.state_dict(), in_chans=1)
    torch.testing.assert_close(one.stem.conv.weight, rgb.sum(1, keepdim=True))
    # Replicated grey input through the adapted stem equals RGB input through the original one.
    six = adapt_input_conv(rgb, 6)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(torch.nn.functional.conv2d(torch.cat([x, x], 1), six),
                               torch.nn.functional.conv2d(x, rgb), atol=1e-5, rtol=0)


def test_width_mismatch_is_reported(tv_model) -> None:
    with pytest.raises(ValueError, match=r"shape mismatch .*stem\.conv\.weight"):
        create_backbone("ld_mobilenetv2_050", pretrained=tv_model.state_dict())


def test_family_and_key_mismatch(tv_model) -> None:
    with pytest.raises(ValueError, match="layouts it understands"):
        create_backbone("ld_shufflenetv1_g3_100", pretrained=tv_model.state_dict())
    broken = dict(tv_model.state_dict())
    del broken["features.5.conv.1.0.weight"]
    broken["features.5.conv.9.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['stages.2.1.dw.conv.weight'\].*unexpected"):
        create_backbone("ld_mobilenetv2_100", pretrained=broken)
    with pytest.raises(ValueError, match="unrecognised checkpoint layout"):
        create_backbone("ld_mobilenetv2_100", pretrained={"foo.weight": torch.zeros(1)})


class _NotATensor:
    pass


def _unreadable_files(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "random.pth").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"state_dict": _NotATensor()}, tmp_path / "pickled_object.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{oops")
    save_file({"foo.weight": torch.zeros(2)}, tmp_path / "wrong_keys.safetensors")
    return {"random.pth": "corrupt or of another format", "empty.pth": "empty or truncated",
            "pickled_object.pth": "Python objects other than tensors", "garbage.safetensors": "corrupt",
            "wrong_keys.safetensors": "unrecognised checkpoint layout"}


def test_unreadable_weight_files_fail_in_one_line_without_unsafe_advice(tmp_path) -> None:
    for name, reason in _unreadable_files(tmp_path).items():
        with pytest.raises(ValueError) as info:
            create_backbone("ld_mobilenetv2_100", pretrained=str(tmp_path / name))
        message = str(info.value)
        assert reason in message and "\n" not in message and "weights_only" not in message, message
        assert name in message, message


def test_corrupt_and_missing_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="neither a file nor a named source"):
        create_backbone("ld_mobilenetv2_100", pretrained=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="checkpoint not found"):
        create_backbone("ld_shufflenetv1_g3_100", pretrained=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="no named pretrained weights"):
        create_backbone("ld_mobilenetv2_075", pretrained=True)


def test_classifier_is_dropped_or_kept(tv_model) -> None:
    model = create_backbone("ld_mobilenetv2_100", out_indices=ALL_MOBILENET_TAPS)
    kept = convert_state_dict(model, tv_model.state_dict(), keep_classifier=True)
    assert kept["classifier.weight"].shape == (1000, 1280)
    assert "classifier.weight" not in convert_state_dict(model, tv_model.state_dict())
