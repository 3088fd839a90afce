"""SSDLite's all-classes-at-once post-processing gives exactly torchvision's per-class detections."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.ssd import SSD

from heads import create_detector, ssd_postprocess


@pytest.mark.parametrize("sparse_max", [0, ssd_postprocess.SPARSE_MAX])  # top-k down the columns / sort the passing
@pytest.mark.parametrize("score_thresh, topk, logit_scale", [
    (0.01, 400, 1.0),   # random-weight regime: every box passes, NMS sees the full top-k of every class
    (0.01, 5, 1.0),     # ... cut to the top 5 of each class
    (0.3, 50, 4.0),     # trained-model regime: few boxes per class, some classes empty
    (0.999, 400, 1.0),  # nothing passes
])
def test_same_detections_as_torchvision(score_thresh: float, topk: int, logit_scale: float, sparse_max: int,
                                        monkeypatch) -> None:
    monkeypatch.setattr(ssd_postprocess, "SPARSE_MAX", sparse_max)
    model = create_detector("ld_mobilenetv2_035", 6, size=96, score_thresh=score_thresh, topk_candidates=topk,
                            detections_per_img=60).eval()
    generator = torch.Generator().manual_seed(0)
    num_anchors = 6 * sum(s * s for s in (6, 3, 2, 1, 1, 1))
    outputs = {"cls_logits": logit_scale * torch.randn(2, num_anchors, 6, generator=generator),
               "bbox_regression": torch.randn(2, num_anchors, 4, generator=generator)}
    image_list, _ = model.transform([torch.rand(3, 80, 96), torch.rand(3, 96, 70)])
    maps = [torch.empty(2, 1, s, s) for s in (6, 3, 2, 1, 1, 1)]
    anchors = model.anchor_generator(image_list, maps)
    expected = SSD.postprocess_detections(model, outputs, anchors, image_list.image_sizes)
    got = model.postprocess_detections(outputs, anchors, image_list.image_sizes)
    assert sum(len(e["scores"]) for e in expected) > 0 or score_thresh > 0.99
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for key in e:
            assert g[key].dtype == e[key].dtype and torch.equal(g[key], e[key]), key


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning", "ignore::FutureWarning")
def test_traced_detector_keeps_torchvision_post_processing(monkeypatch) -> None:
    """Tracing (the ONNX exporter's route) must not bake the per-class counts of one input into the graph."""
    model = create_detector("ld_mobilenetv2_035", 4, size=64, score_thresh=0.2).eval().requires_grad_(False)
    calls = []
    original = SSD.postprocess_detections

    def spy(self, *args):
        calls.append(torch.jit.is_tracing())
        return original(self, *args)

    monkeypatch.setattr(SSD, "postprocess_detections", spy)
    with torch.no_grad():
        torch.jit.trace(lambda x: model([x])[0]["scores"], torch.rand(3, 64, 64), check_trace=False)
        model([torch.rand(3, 64, 64)])
    assert calls == [True]
