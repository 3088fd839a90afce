"""Dense-prediction heads that read only the backbone contract (channels, strides)."""
from .deeplabv3plus import DeepLabV3PlusHead, Segmenter, create_segmenter
