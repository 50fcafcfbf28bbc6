"""recipe.py: the schedule's values, the optimizer of each choice, and continuing a phase on resume."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import recipe
from models import build_unet


def values(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_cosine_with_warmup_by_hand():
    schedule = recipe.create_schedule("cosine", 1e-3, total_steps=100, warmup_steps=10)
    got = values(schedule, [0, 5, 10, 55, 100, 150])
    # linear from 0 to the peak over 10 steps, then half a cosine over the remaining 90 to 0
    expected = [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert float(schedule(32)) == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 22 / 90)), rel=1e-5)


def test_cosine_without_warmup_starts_at_the_peak():
    schedule = recipe.create_schedule("cosine", 2e-3, total_steps=40, warmup_steps=0)
    np.testing.assert_allclose(values(schedule, [0, 20, 40]), [2e-3, 1e-3, 0.0], atol=1e-9)


def test_warmup_never_takes_more_than_half_the_phase():
    schedule = recipe.create_schedule("cosine", 1e-3, total_steps=10, warmup_steps=50)
    assert schedule.warmup_steps == 5 and float(schedule(5)) == pytest.approx(1e-3)


def test_constant_schedule_is_the_number():
    assert recipe.create_schedule("constant", 1e-3, total_steps=10, warmup_steps=3) == 1e-3


def test_bad_schedule_and_optimizer_names():
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        recipe.create_schedule("step", 1e-3, 10)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        recipe.create_optimizer("sgd", 1e-3)


def test_optimizers():
    adamw = recipe.create_optimizer("adamw", 1e-3, weight_decay=1e-4)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(1e-4)
    assert type(recipe.create_optimizer("adam", 1e-3)) is keras.optimizers.Adam


class CountingCosine(keras.optimizers.schedules.CosineDecay):
    """The recipe's warm-up and cosine, counting how often the train step's trace reads it."""

    readings = 0

    def __call__(self, step):
        CountingCosine.readings += 1
        return super().__call__(step)


def adamw_steps(optimizer, strategy, steps=5):
    """`steps` AdamW steps of a small network (6 trainable variables) on one batch; the weights after them."""
    with strategy.scope():
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                                  keras.layers.BatchNormalization(), keras.layers.Conv2D(3, 1)])
        model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.optimizer.build(model.trainable_variables)  # as training.compile_phase does: one trace
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, (4, 8, 8, 1))
    model.fit(x, y, batch_size=4, epochs=steps, verbose=0, shuffle=False)
    return model.get_weights()


@pytest.mark.parametrize("strategy", ["one device", "mirrored"])
def test_adamw_reads_the_schedule_once_a_step_and_updates_as_keras_does(strategy):
    """The decay uses the learning rate once a trace, not once per variable, with Keras' own arithmetic."""
    strategy = tf.distribute.get_strategy() if strategy == "one device" else tf.distribute.MirroredStrategy(["/cpu:0"])

    def schedule():  # a warm-up over 2 steps, then the decay: the rate differs at every step
        return CountingCosine(0.0, decay_steps=8, warmup_target=1e-2, warmup_steps=2)

    keras.utils.set_random_seed(0)
    CountingCosine.readings = 0
    ours = adamw_steps(lambda: recipe.create_optimizer("adamw", schedule(), weight_decay=0.5), strategy)
    # one reading for the decay, one for Adam's update, in the one trace of the train step
    assert CountingCosine.readings == 2
    keras.utils.set_random_seed(0)
    CountingCosine.readings = 0
    kept = adamw_steps(lambda: keras.optimizers.AdamW(schedule(), weight_decay=0.5), strategy)
    assert CountingCosine.readings == 6 + 1  # Keras' own: once for each variable, once for Adam
    assert len(ours) == len(kept)
    for got, expected in zip(ours, kept):
        np.testing.assert_array_equal(got, expected)  # the same arithmetic in the same order
    # the decay is strong enough here to show: without it the weights come out elsewhere
    keras.utils.set_random_seed(0)
    undecayed = adamw_steps(lambda: keras.optimizers.AdamW(schedule(), weight_decay=0.0), strategy)
    assert max(np.abs(a - b).max() for a, b in zip(undecayed, kept)) > 1e-4


def test_a_saved_adamw_is_keras_own(tmp_path):
    """The one-reading decay changes the instance, not the class: saved models load in plain Keras."""
    model = small_model()
    train_steps(model, 2, recipe.create_schedule("cosine", 1e-2, total_steps=20, warmup_steps=4))
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        optimizer = json.loads(archive.read("config.json"))["compile_config"]["optimizer"]
    assert (optimizer["module"], optimizer["class_name"]) == ("keras.optimizers", "AdamW")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is keras.optimizers.AdamW and int(loaded.optimizer.iterations.numpy()) == 2


def test_batchnorm_momentum_reaches_trainable_layers_only():
    model = build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8))
    model.get_layer("enc1_bn").trainable = False
    assert recipe.configure_batchnorm(model, 0.9, synchronized=True) == 5
    assert model.get_layer("enc2_bn").momentum == pytest.approx(0.9) and model.get_layer("enc2_bn").synchronized
    assert model.get_layer("enc1_bn").momentum == pytest.approx(0.99) and not model.get_layer("enc1_bn").synchronized


def train_steps(model, steps, schedule):
    model.compile(recipe.create_optimizer("adamw", schedule, 1e-4), "mse")
    x = np.random.default_rng(0).random((steps * 2, 4)).astype("float32")
    model.fit(x, x[:, :2], batch_size=2, epochs=1, verbose=0, shuffle=False)


def small_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def test_a_resumed_phase_continues_its_schedule_and_moments(tmp_path):
    """Saved after 6 of 20 steps, loaded, and given a longer plan: step count and moments carry over."""
    model = small_model()
    train_steps(model, 6, recipe.create_schedule("cosine", 1e-2, total_steps=20, warmup_steps=4))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert int(loaded.optimizer.iterations) == 6
    np.testing.assert_allclose(float(loaded.optimizer.learning_rate), float(model.optimizer.learning_rate))

    longer = recipe.create_schedule("cosine", 1e-2, total_steps=40, warmup_steps=4)
    fresh = recipe.create_optimizer("adamw", longer, 1e-4)
    fresh.build(loaded.trainable_variables)
    recipe.transfer_optimizer_state(loaded.optimizer, fresh)
    assert int(fresh.iterations) == 6  # not restarted: no second warm-up
    assert float(fresh.learning_rate) == pytest.approx(float(longer(6)))
    for old, new in zip(loaded.optimizer.variables, fresh.variables):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


def test_transfer_refuses_a_different_model():
    source = recipe.create_optimizer("adamw", 1e-3)
    source.build(small_model().trainable_variables)
    target = recipe.create_optimizer("adamw", 1e-3)
    target.build(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).trainable_variables)
    with pytest.raises(ValueError, match="has shape"):
        recipe.transfer_optimizer_state(source, target)
    with pytest.raises(ValueError, match="cannot continue a AdamW as a Adam"):
        recipe.transfer_optimizer_state(source, recipe.create_optimizer("adam", 1e-3))


def nested_model():
    """An 'encoder' model nested in the whole, as the MobileNetV2 U-Net's is, and a 'head' layer."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    encoder = keras.Model(inputs, keras.layers.Dense(3, name="enc")(inputs), name="encoder")
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(encoder(inputs)))


@pytest.mark.parametrize("strategy", ["one device", "mirrored"])
def test_a_layer_group_trains_at_its_own_rate(strategy):
    """Adam's first step moves each weight by its learning rate: 2.5e-4 in the group, 1e-3 elsewhere."""
    strategy = tf.distribute.get_strategy() if strategy == "one device" else tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = nested_model()
        optimizer = recipe.create_optimizer("adamw", 1e-3, weight_decay=0.0, layer_groups=[(["enc"], 2.5e-4)])
        model.compile(optimizer, "mse")
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    before = {w.path: w.numpy() for w in model.trainable_weights}
    x = np.random.default_rng(1).random((8, 4)).astype("float32")
    model.fit(x, x[:, :2] + 5.0, batch_size=8, epochs=1, verbose=0, shuffle=False)
    moved = {w.path: np.abs(w.numpy() - before[w.path]) for w in model.trainable_weights}
    assert sorted(moved) == ["enc/bias", "enc/kernel", "head/bias", "head/kernel"]
    for path, step in moved.items():
        rate = 2.5e-4 if path.startswith("enc/") else 1e-3
        np.testing.assert_allclose(step[step > 1e-6], rate, rtol=1e-3, err_msg=path)


def test_a_layer_group_is_saved_and_continued_with_the_model(tmp_path):
    """The per-group optimizers are Keras' MultiOptimizer, saved and loaded with their state, and a
    resumed phase carries both groups' step counts and moments over."""
    model = nested_model()
    peaks = {"head": 1e-2, "enc": 2e-3}

    def grouped(total_steps):
        def schedule(peak):
            return recipe.create_schedule("cosine", peak, total_steps=total_steps, warmup_steps=2)

        return recipe.create_optimizer("adamw", schedule(peaks["head"]), 1e-4,
                                       layer_groups=[(["enc"], schedule(peaks["enc"]))])

    model.compile(grouped(20), "mse")
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    model.fit(x, x[:, :2], batch_size=2, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is keras.optimizers.MultiOptimizer
    assert sorted(float(inner.learning_rate) for inner in loaded.optimizer.optimizers) == pytest.approx(
        sorted(peaks[name] * float(recipe.create_schedule("cosine", 1.0, 20, 2)(4)) for name in peaks))
    fresh = grouped(40)
    fresh.build(loaded.trainable_variables)
    recipe.transfer_optimizer_state(loaded.optimizer, fresh)
    assert [int(inner.iterations.numpy()) for inner in fresh.optimizers] == [4, 4]
    assert len(fresh.variables) == len(loaded.optimizer.variables) > 8
    for old, new in zip(loaded.optimizer.variables, fresh.variables):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


def test_a_layer_group_needs_layers():
    with pytest.raises(ValueError, match="at least one layer name"):
        recipe.create_optimizer("adamw", 1e-3, layer_groups=[([], 1e-4)])
    assert recipe.variables_of_layers(["block_6_expand", "a.b"]) == r"(block_6_expand|a\.b)/.*"
