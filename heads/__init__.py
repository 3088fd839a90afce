"""Dense-prediction heads on the backbone contract: DeepLabV3+ (segmentation) and SSDLite (detection)."""
from .ssdlite import SSDLite, SSDLiteHead, create_detector

__all__ = ["SSDLite", "SSDLiteHead", "create_detector"]
