"""Model builders: plain functions with keyword arguments, each returning a keras.Model.

Both models output per-pixel logits (no softmax) with `num_classes` channels, in float32
even under a mixed-precision policy, for SparseCategoricalCrossentropy(from_logits=True).
"""

from models.blocks import upsample
from models.mobilenet_unet import build_mobilenet_unet
from models.unet import build_unet

__all__ = ["build_unet", "build_mobilenet_unet", "upsample"]
