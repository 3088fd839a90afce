"""Dense-prediction heads on the backbone contract: DeepLabV3+ (segmentation) and SSDLite (detection)."""
from .deeplabv3plus import DeepLabV3PlusHead, Segmenter, create_segmenter
from .ssdlite import SSDLite, SSDLiteHead, create_detector

__all__ = ["DeepLabV3PlusHead", "SSDLite", "SSDLiteHead", "Segmenter", "create_detector", "create_segmenter"]
