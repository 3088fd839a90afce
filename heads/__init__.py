"""Dense-prediction heads on the backbone contract: DeepLabV3+ (segmentation), SSDLite and SSD (detection)."""
from .deeplabv3plus import DeepLabV3PlusHead, Segmenter, create_segmenter
from .detector import DetectionHead, SSDDetector, create_detector

__all__ = ["DeepLabV3PlusHead", "DetectionHead", "SSDDetector", "Segmenter", "create_detector", "create_segmenter"]
