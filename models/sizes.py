"""What sizes a built model can take, and letting it train on windows smaller than its own size.

Both models are fully convolutional: the same weights serve any size their halvings add back
up from. Keras still fixes a functional model's size in its inputs, and checks every call
against it (the model, the MobileNetV2 encoder inside it and each pix2pix block), so a model
built for the photos it will predict, say 160 px, refuses the 128 px windows --crop trains
it on, and a model trained at 128 px the 160 px photos of predict.py's --size.
`accept_any_size` lifts those checks on the built model for calls on tensors (training, and
inference.keras_predictor's traced function); the model keeps its own size for saving,
symbolic calls and export.
"""

from __future__ import annotations

import keras
from keras.layers import InputSpec


def size_multiple(model: keras.Model) -> int:
    """The step of the sizes the model takes: its input side over its coarsest feature map's
    (32 for the MobileNetV2 U-Net, 2 ** levels for the U-Net)."""
    side = model.input_shape[1]
    return side // min(_spatial_sides(model), default=side)


def accept_any_size(model: keras.Model) -> None:
    """Lets `model` (and the models nested in it) be called on images of any height and width.

    Only the input checks change, by setting each model's `input_spec` to the same spec with
    free height and width; the checks are not saved, so saved files are unchanged. A size
    outside `size_multiple` then fails inside the model, so callers check it first.
    """
    for layer in _models_in(model):
        specs = layer.input_spec
        if specs is None:
            continue
        specs = specs if isinstance(specs, (list, tuple)) else [specs]
        layer.input_spec = [_free_spatial(spec) for spec in specs]


def _free_spatial(spec: InputSpec) -> InputSpec:
    if spec.shape is None or len(spec.shape) != 4:
        return spec
    return InputSpec(shape=(None, None, None, spec.shape[-1]), allow_last_axis_squeeze=spec.allow_last_axis_squeeze,
                     name=spec.name, optional=spec.optional)


def _models_in(model: keras.Model):
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _models_in(layer)


def _spatial_sides(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _spatial_sides(layer)
            continue
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1]:
            yield min(shape[1], shape[2])
