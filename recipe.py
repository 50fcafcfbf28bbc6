"""The training recipe: optimizer, learning-rate schedule and BatchNorm momentum, made in one place.

Like timm's create_optimizer / create_scheduler, the training core asks this module for the
parts of a phase instead of building them itself, so a new choice is a change here only.
Each phase (frozen encoder, then fine-tuning) gets its own optimizer and its own schedule,
which counts that phase's steps from zero: Keras' `optimizer.iterations` is saved with the
model, so a resumed phase continues its schedule where it stopped.

The defaults are the best measured on real photos (see BENCHMARKS.md, bench/quality.py).
"""

from __future__ import annotations

import re
from typing import Sequence

import keras
import tensorflow as tf
from keras import layers

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "constant")
DEFAULT_OPTIMIZER = "adamw"
DEFAULT_SCHEDULE = "cosine"
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_WARMUP_EPOCHS = 1.0
DEFAULT_BATCH_SIZE = 16
DEFAULT_BN_MOMENTUM = 0.9
DEFAULT_OUTLINE_WEIGHT = 3.0  # the outline's pixels (data.outline_pixels) in the loss


def create_schedule(
    name: str, peak: float, total_steps: int, warmup_steps: int = 0
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """`peak` constant, or a linear warm-up to `peak` then a cosine decay to zero at `total_steps`.

    The warm-up never takes more than half the phase.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: use one of {', '.join(SCHEDULES)}")
    if peak <= 0 or total_steps < 1:
        raise ValueError(f"a schedule needs a positive peak and at least one step, got {peak} and {total_steps}")
    if name == "constant":
        return float(peak)
    warmup_steps = int(min(max(warmup_steps, 0), total_steps // 2))
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total_steps, alpha=0.0)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps - warmup_steps, alpha=0.0, warmup_target=peak, warmup_steps=warmup_steps
    )


LearningRate = float | keras.optimizers.schedules.LearningRateSchedule


def create_optimizer(
    name: str, learning_rate: LearningRate, weight_decay: float = 0.0, *,
    layer_groups: Sequence[tuple[Sequence[str], LearningRate]] = (),
) -> keras.optimizers.Optimizer:
    """AdamW (decoupled weight decay) or the tutorial's Adam; weight decay applies to AdamW only.

    `layer_groups`: (layer names, learning rate) pairs for layers that train at a rate of their
    own, such as a pretrained encoder fine-tuned more gently than the decoder on top of it.
    Each group gets its own copy of the optimizer, and every other layer the one at
    `learning_rate`, through Keras' MultiOptimizer (which saves, loads and runs under the
    distribution strategies like any optimizer). Without groups the optimizer is the plain one.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")

    def one(rate: LearningRate) -> keras.optimizers.Optimizer:
        if name == "adamw":
            return with_one_learning_rate_a_step(keras.optimizers.AdamW(rate, weight_decay=weight_decay))
        return keras.optimizers.Adam(rate)

    if not layer_groups:
        return one(learning_rate)
    by_variable = keras.optimizers.OptimizerMap(one(learning_rate))
    for names, rate in layer_groups:
        if not names:
            raise ValueError("a layer group needs at least one layer name")
        by_variable[variables_of_layers(names)] = one(rate)
    return keras.optimizers.MultiOptimizer(by_variable)


def variables_of_layers(names: Sequence[str]) -> str:
    """The OptimizerMap pattern for the variables of the layers `names` (a variable's path is
    'layer/weight', also for the layers of a model nested in another)."""
    return "(" + "|".join(re.escape(name) for name in names) + ")/.*"


def with_one_learning_rate_a_step(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Makes `optimizer`'s weight decay read the learning rate once a step instead of once a variable.

    Keras 3.15's TensorFlow backend asks for the learning rate inside the weight decay of each
    variable, so a schedule is built into the train step once per trainable variable. The
    warm-up's `cond` makes each copy costly to trace: on 2 cores the default U-Net's first
    step took 10.1 s with Keras' own AdamW and 6.2 s with this one, a MobileNetV2 U-Net's
    first step of fine-tuning 10.6 s and 8.0 s (BENCHMARKS.md, section 2).
    This does what Keras does (variable -= variable * weight_decay * learning_rate, through the
    strategy's `update` so that mirrored copies stay equal) with one reading of the schedule.
    Only this instance changes: the class and its saved config stay Keras' own, so saved
    models load in plain Keras. tests/test_recipe.py checks the updates equal Keras' own.
    """
    if optimizer.weight_decay is None:
        return optimizer

    def apply_weight_decay(variables):
        def decay_all(strategy, variables):
            learning_rate = optimizer.learning_rate  # the one reading of the schedule

            def decay(variable):
                if optimizer._use_weight_decay(variable):  # Keras' arithmetic, in Keras' order
                    lr = tf.cast(learning_rate, variable.dtype)
                    wd = tf.cast(optimizer.weight_decay, variable.dtype)
                    variable.assign_sub(variable * wd * lr)

            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value  # the tf.Variable the strategy updates
                strategy.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(decay_all, optimizer._distribution_strategy, variables)

    optimizer._apply_weight_decay = apply_weight_decay
    return optimizer


def configure_batchnorm(model: keras.Model, momentum: float, synchronized: bool = False) -> int:
    """Sets momentum (and cross-replica synchronization) of every BatchNorm layer that trains; returns how many.

    Frozen BatchNorm layers (a pretrained encoder's) keep theirs: they do not update. With a
    few steps an epoch, Keras' default of 0.99 leaves a third of each moving average at its
    initial value after 100 steps, so the model in inference mode is not the one that trained.
    With several replicas, `synchronized` makes every replica normalize with the statistics
    of the global batch, as one device would, so the moving averages stay the same everywhere.
    """
    changed = 0
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization) and layer.trainable:
            layer.momentum = momentum
            layer.synchronized = synchronized
            changed += 1
    return changed


def _all_layers(layer: keras.layers.Layer):
    yield layer
    if layer.trainable:  # a frozen sub-model's layers are frozen too
        for child in getattr(layer, "layers", ()):
            yield from _all_layers(child)


def transfer_optimizer_state(source: keras.optimizers.Optimizer, target: keras.optimizers.Optimizer) -> None:
    """Copies step count and moments into a freshly built optimizer of the same kind.

    Used when a resumed run gets a new schedule (a longer plan): the step count and Adam's
    moments carry over, so the phase continues rather than restarting.
    """
    if type(source) is not type(target):
        raise ValueError(f"cannot continue a {type(source).__name__} as a {type(target).__name__}")
    if len(source.variables) != len(target.variables):
        raise ValueError(f"the saved optimizer has {len(source.variables)} variables, the new one "
                         f"{len(target.variables)}: the model's trainable weights changed")
    for old, new in zip(source.variables, target.variables):
        if tuple(old.shape) != tuple(new.shape):
            raise ValueError(f"optimizer variable {old.path} has shape {old.shape}, expected {new.shape}")
        new.assign(old)
