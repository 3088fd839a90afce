"""The official ShuffleNetV1 release layout, URL downloads, and offline failures of named sources."""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_bn
from safetensors.torch import save_file
from torch import nn

from backbones import create_backbone
from backbones.weights import MEGVII


class OfficialUnit(nn.Module):
    """The official release's unit as its state dict names it (branch_main_1/2, branch_proj)."""

    def __init__(self, inp: int, oup: int, group: int, first: bool, stride: int) -> None:
        super().__init__()
        mid, out = oup // 4, oup - inp if stride == 2 else oup
        self.group, self.stride = group, stride
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(inp, mid, 1, bias=False, groups=1 if first else group), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.branch_main_2 = nn.Sequential(nn.Conv2d(mid, out, 1, groups=group, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch_main_1(x)
        n, c, h, w = y.shape
        if self.group > 1:  # the release reshapes to (C//g, g) and swaps the two axes
            y = y.reshape(n, c // self.group, self.group, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        y = self.branch_main_2(y)
        if self.stride == 1:
            return F.relu(x + y)
        return torch.cat([F.avg_pool2d(x, 3, 2, 1), F.relu(y)], 1)


def official_shufflenet(group: int, stem: int, chans: list[int]) -> nn.Module:
    model = nn.Module()
    model.first_conv = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
    units, inp = [], stem
    for s, (repeats, oup) in enumerate(zip((4, 8, 4), chans)):
        for i in range(repeats):
            units.append(OfficialUnit(inp, oup, group, s == 0 and i == 0, 2 if i == 0 else 1))
            inp = oup
    model.features = nn.Sequential(*units)
    model.classifier = nn.Sequential(nn.Linear(chans[-1], 1000, bias=False))
    return model


@pytest.mark.parametrize("group,width,stem,chans", [(3, "100", 24, [240, 480, 960]), (8, "050", 16, [192, 384, 768])])
def test_official_shufflenet_release_loads(group: int, width: str, stem: int, chans: list[int], tmp_path) -> None:
    torch.manual_seed(0)
    ref = randomize_bn(official_shufflenet(group, stem, chans)).eval()
    path = tmp_path / "snetv1.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    ours = create_backbone(f"ld_shufflenetv1_g{group}_{width}", pretrained=str(path)).eval()
    assert ours.preprocessing == MEGVII
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        h = ref.first_conv(x.flip(1))  # the release takes BGR; ours was flipped to take RGB
        expected = [h, F.max_pool2d(h, 3, 2, 1)]
        h = expected[-1]
        for stage in (ref.features[:4], ref.features[4:12], ref.features[12:]):
            h = stage(h)
            expected.append(h)
        for a, b in zip(ours(x), expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # Round trip: our own layout saves and reloads to the same tensors.
    torch.save(ours.state_dict(), tmp_path / "ours.pth")
    again = create_backbone(f"ld_shufflenetv1_g{group}_{width}", pretrained=str(tmp_path / "ours.pth"))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())


@pytest.fixture
def loopback_server(tmp_path):
    """Serve tmp_path/www over http on 127.0.0.1 and point torch.hub's cache into tmp_path."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    torch.hub.set_dir(old)
    server.shutdown()


def test_url_downloads_into_hub_cache(loopback_server) -> None:
    root, base = loopback_server
    state = create_backbone("ld_shufflenetv1_g3_050").state_dict()
    torch.save(state, root / "weights.pth")
    model = create_backbone("ld_shufflenetv1_g3_050", pretrained=f"{base}/weights.pth")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert (Path(torch.hub.get_dir()) / "checkpoints" / "weights.pth").is_file()
    with pytest.raises(RuntimeError, match="could not download .*missing.pth .*local path"):
        create_backbone("ld_shufflenetv1_g3_050", pretrained=f"{base}/missing.pth")


@pytest.mark.parametrize("source", ["torchvision_v1", "timm_ra_in1k"])
def test_named_sources_fail_offline_clearly(source: str, monkeypatch, tmp_path) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(RuntimeError, match="could not download .*OSError: network is unreachable.*local path"):
            create_backbone("ld_mobilenetv2_100", pretrained=source)
    finally:
        torch.hub.set_dir(old)


def test_hf_hub_id_downloads_through_the_hub(monkeypatch, tmp_path) -> None:
    state = create_backbone("ld_mobilenetv2_100").state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    asked = []

    def fake_download(repo_id: str, filename: str) -> str:
        asked.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    model = create_backbone("ld_mobilenetv2_100", pretrained="hf-hub:someone/mobilenetv2_100.finetuned")
    assert asked == [("someone/mobilenetv2_100.finetuned", "model.safetensors")]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
