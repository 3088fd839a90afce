"""Lightweight backbones for dense prediction: MobileNetV1, MobileNetV2 and ShuffleNetV1 as multi-scale feature
extractors."""
from .base import Backbone, FeatureInfo
from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import MobileNetV2
from .registry import create_backbone, list_backbones
from .shufflenetv1 import ShuffleNetV1
from . import smp_plugin, timm_plugin  # noqa: F401  register every name with smp and timm

__all__ = ["Backbone", "FeatureInfo", "MobileNetV1", "MobileNetV2", "ShuffleNetV1", "create_backbone", "list_backbones"]
