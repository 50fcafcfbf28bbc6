"""models/: shapes, parameter counts, freezing, saving; encoder weights none throughout."""

import warnings

import keras
import numpy as np
import pytest

from models import build_mobilenet_unet, build_unet, upsample
from models import sizes
from models.mobilenet_unet import WeightsFileError, set_encoder_trainable, stem_stride_of, with_stem_stride


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# ---------------------------------------------------------------- U-Net


def test_unet_parameter_count_at_128():
    assert build_unet((128, 128, 3), 3).count_params() == 15_383_923


@pytest.mark.parametrize("shape", [(128, 128, 3), (256, 256, 3), (64, 192, 3)])
def test_unet_output_is_logits_of_the_input_size(shape):
    model = build_unet(shape, 5, filters=(4, 4, 8, 8, 8, 8))
    for batch in (1, 4):
        out = model.predict(np.random.rand(batch, *shape).astype("float32"), verbose=0)
        assert out.shape == (batch, shape[0], shape[1], 5) and out.dtype == np.float32
        assert not np.allclose(out.sum(-1), 1.0)  # logits, not probabilities


@pytest.mark.parametrize("shape", [(100, 128, 3), (128, 96, 3), (32, 32, 3)])
def test_unet_refuses_sizes_not_divisible_by_64(shape):
    with pytest.raises(ValueError, match="multiple of 64"):
        build_unet(shape)


def test_unet_levels_follow_the_filters():
    model = build_unet((32, 32, 3), 2, filters=(8, 16), bottleneck_filters=24)
    assert [model.get_layer(f"enc{i}_conv").filters for i in (1, 2)] == [8, 16]
    assert model.get_layer("bottleneck_conv").filters == 24
    assert model.output_shape == (None, 32, 32, 2)


# ---------------------------------------------------------------- MobileNetV2 U-Net


def test_mobilenet_unet_parameter_counts_at_128():
    model = build_mobilenet_unet((128, 128, 3), 3, encoder_weights=None)
    assert model.count_params() == 6_504_227
    assert trainable_count(model) == 4_660_323


@pytest.mark.parametrize("shape", [(64, 64, 3), (96, 160, 3), (128, 128, 3)])
def test_mobilenet_unet_output_shapes(shape):
    model = build_mobilenet_unet(shape, 4, encoder_weights=None)
    for batch in (1, 4):
        assert model.predict(np.zeros((batch, *shape), "float32"), verbose=0).shape == (batch, shape[0], shape[1], 4)


@pytest.mark.parametrize("shape", [(100, 128, 3), (128, 48, 3), (128, 128, 1)])
def test_mobilenet_unet_refuses_bad_shapes(shape):
    with pytest.raises(ValueError, match="multiple of 32|RGB input"):
        build_mobilenet_unet(shape, encoder_weights=None)


def test_mobilenet_unet_rescales_to_minus_one_one_inside_the_model():
    model = build_mobilenet_unet((64, 64, 3), encoder_weights=None)
    rescale = model.get_layer("to_mobilenet_range")
    np.testing.assert_allclose(rescale(np.array([[0.0, 0.5, 1.0]])).numpy(), [[-1.0, 0.0, 1.0]])
    assert model.get_layer("encoder").input is not model.input


def test_missing_local_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder weights file .*nothing.h5 does not exist"):
        build_mobilenet_unet((64, 64, 3), encoder_weights=tmp_path / "nothing.h5")


def test_local_weights_file_is_loaded(tmp_path):
    source = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None)
    path = tmp_path / "mobilenet_no_top.weights.h5"
    source.save_weights(path)
    model = build_mobilenet_unet((64, 64, 3), encoder_weights=path)
    np.testing.assert_array_equal(model.get_layer("encoder").get_layer("Conv1").kernel.numpy(),
                                  source.get_layer("Conv1").kernel.numpy())


def test_a_file_of_other_weights_is_refused_not_half_loaded(tmp_path):
    (tmp_path / "junk.h5").write_text("not HDF5")
    with pytest.raises(WeightsFileError, match=r"junk.h5 holds no weights of Keras' MobileNetV2 without its top, "
                                               r"alpha 1.0, as keras.applications reads them \(Unable to"):
        build_mobilenet_unet((64, 64, 3), encoder_weights=tmp_path / "junk.h5")
    narrower = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None, alpha=0.35)
    narrower.save_weights(tmp_path / "alpha_0.35.weights.h5")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(WeightsFileError, match=r"alpha_0.35.weights.h5 holds no weights of Keras' MobileNetV2"):
            build_mobilenet_unet((64, 64, 3), encoder_weights=tmp_path / "alpha_0.35.weights.h5")
    assert not [w for w in shown if "Skipping nested container" in str(w.message)]


def test_a_fuse_block_mixes_the_join_it_is_asked_for():
    widths = (32, 16, 16, 8)
    plain = build_mobilenet_unet((64, 64, 3), encoder_weights=None, decoder_filters=widths)
    fused = build_mobilenet_unet((64, 64, 3), encoder_weights=None, decoder_filters=widths, fuse_filters=(0, 0, 12, 0))
    assert not [layer.name for layer in plain.layers if "fuse" in layer.name]  # pix2pix's decoder by default
    block = fused.get_layer("up3_fuse")
    assert [type(layer).__name__ for layer in block.layers] == ["Conv2D", "BatchNormalization", "ReLU"]
    # up3's 16 channels joined to block_3_expand_relu's 144, at a quarter of 64 px
    assert block.input.shape == (None, 16, 16, 160) and block.output.shape == (None, 16, 16, 12)
    assert fused.get_layer("up4").input.shape[-1] == 12 and fused.output.shape == (None, 64, 64, 3)
    # the 3x3 convolution and its BatchNorm, less what up4's kernel no longer reads (160 -> 12 channels)
    added = 3 * 3 * 160 * 12 + 4 * 12 - 3 * 3 * 8 * (160 - 12)
    assert fused.count_params() - plain.count_params() == added == 6_672


def test_fuse_filters_need_one_width_per_decoder_block():
    with pytest.raises(ValueError, match=r"one width of 0 or more per decoder block \(4\), got \(0, 48\)"):
        build_mobilenet_unet((64, 64, 3), encoder_weights=None, fuse_filters=(0, 48))


def test_the_decoder_joins_the_encoder_outputs_it_is_asked_for():
    widths = (32, 16, 16, 8)
    expansions = build_mobilenet_unet((64, 64, 3), encoder_weights=None, decoder_filters=widths)
    outputs = build_mobilenet_unet((64, 64, 3), encoder_weights=None, decoder_filters=widths, skips="outputs")
    encoder = outputs.get_layer("encoder")
    assert [output is encoder.get_layer(name).output for output, name in zip(encoder.outputs, [
        "block_1_expand_relu", "block_2_add", "block_5_add", "block_12_add", "block_16_project"])] == [True] * 5
    assert [output.shape[1:] for output in encoder.outputs] == [
        (32, 32, 96), (16, 16, 24), (8, 8, 32), (4, 4, 96), (2, 2, 320)]  # 1/2 to 1/32 of 64 px
    assert [layer.input[1].shape[-1] for layer in (outputs.get_layer(f"up{i}_concat") for i in (1, 2, 3, 4))] == [
        96, 32, 24, 96]
    assert [layer.input[1].shape[-1] for layer in (expansions.get_layer(f"up{i}_concat") for i in (1, 2, 3, 4))] == [
        576, 192, 144, 96]
    # the encoder is the same network; only the kernels that read the joins are narrower
    narrower = 3 * 3 * (16 * (576 - 96) + 16 * (192 - 32) + 8 * (144 - 24))
    assert expansions.count_params() - outputs.count_params() == narrower == 100_800
    assert outputs.output_shape == (None, 64, 64, 3)
    with pytest.raises(ValueError, match="unknown skips 'inputs': use one of expansions, outputs"):
        build_mobilenet_unet((64, 64, 3), encoder_weights=None, skips="inputs")


def test_an_unstrided_stem_runs_the_encoder_at_twice_the_resolution_and_pools_its_joins_back():
    widths = (32, 16, 16, 8)
    strided = build_mobilenet_unet((64, 96, 3), encoder_weights=None, decoder_filters=widths)
    model = build_mobilenet_unet((64, 96, 3), encoder_weights=None, decoder_filters=widths, stem_stride=1)
    encoder = model.get_layer("encoder")
    assert encoder.get_layer("Conv1").strides == (1, 1) and strided.get_layer("encoder").get_layer("Conv1").strides == (2, 2)
    assert encoder.get_layer("Conv1").output.shape == (None, 64, 96, 32)  # the image's own size, not half
    names = ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu",
             "block_16_project"]
    assert [encoder.get_layer(name).output.shape[1:3] for name in names] == [(64, 96), (32, 48), (16, 24), (8, 12),
                                                                            (4, 6)]
    assert [output.shape[1:] for output in encoder.outputs] == [  # the scales the decoder joins: 1/2 to 1/32
        (32, 48, 96), (16, 24, 144), (8, 12, 192), (4, 6, 576), (2, 3, 320)]
    assert model.count_params() == strided.count_params() == 2_066_267  # no parameters added
    assert model.output_shape == (None, 64, 96, 3)
    image = np.random.default_rng(0).random((2, 64, 96, 3)).astype("float32")
    inner = keras.Model(encoder.input, [encoder.get_layer(name).output for name in names])(image)
    for pooled, full in zip(encoder(image), inner):  # each join is the mean of a 2x2 window of the finer features
        full = full.numpy()
        windows = full.reshape(2, full.shape[1] // 2, 2, full.shape[2] // 2, 2, full.shape[3]).mean(axis=(2, 4))
        np.testing.assert_allclose(pooled.numpy(), windows, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2, got 4"):
        build_mobilenet_unet((64, 64, 3), encoder_weights=None, stem_stride=4)


def test_an_unstrided_stem_keeps_the_loaded_weights(tmp_path):
    source = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None)
    path = tmp_path / "mobilenet_no_top.weights.h5"
    source.save_weights(path)
    encoder = build_mobilenet_unet((64, 64, 3), encoder_weights=path, stem_stride=1).get_layer("encoder")
    for name in ("Conv1", "bn_Conv1", "block_6_depthwise", "block_16_project"):
        for loaded, saved in zip(encoder.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(loaded.numpy(), saved.numpy())


def test_a_copy_at_the_other_stem_stride_carries_every_weight_and_back():
    """--stem-stride 2,1 rebuilds the model unstrided when fine-tuning starts: nothing learnt may be lost."""
    architecture = dict(decoder_filters=(32, 16, 16, 8), fuse_filters=(0, 8, 8, 0), skips="outputs")
    keras.utils.set_random_seed(0)
    strided = build_mobilenet_unet((64, 96, 3), encoder_weights=None, **architecture)
    unstrided = with_stem_stride(strided, 1, **architecture)
    back = with_stem_stride(unstrided, 2, **architecture)
    assert [stem_stride_of(model) for model in (strided, unstrided, back)] == [2, 1, 2]
    assert unstrided.name == strided.name and unstrided.output_shape == (None, 64, 96, 3)
    assert not unstrided.get_layer("encoder").trainable  # as the builder leaves it: the caller unfreezes
    assert len(unstrided.weights) == len(strided.weights) == 283
    for copied, learnt in zip(unstrided.get_weights(), strided.get_weights()):  # BatchNorm's statistics too
        np.testing.assert_array_equal(copied, learnt)
    image = np.random.default_rng(1).random((2, 64, 96, 3)).astype("float32")
    # the same weights on twice the resolution give other logits; back at stride 2, the very same ones
    assert np.abs(unstrided(image).numpy() - strided(image).numpy()).max() > 1e-3
    np.testing.assert_array_equal(back(image).numpy(), strided(image).numpy())
    with pytest.raises(ValueError, match="weight shape"):  # not the architecture it was built with
        with_stem_stride(strided, 1, **{**architecture, "decoder_filters": (32, 16, 16, 16)})


@pytest.mark.parametrize("size, stem_stride, built_at", [(96, 2, 96), (64, 1, 128), (128, 1, 256)])
def test_imagenet_weights_come_from_keras_checkpoint_for_the_scale_the_encoder_sees(monkeypatch, size, stem_stride,
                                                                                    built_at):
    """Keras picks its MobileNetV2 checkpoint by the size it is built at: its own for 96 to 224 px, else
    the 224-px one, with a warning that is expected here (256 px: the encoder sees 128-px photos at twice)."""
    requested, real = [], keras.applications.MobileNetV2

    def offline(input_shape, include_top, weights):
        requested.append((input_shape, weights))
        if input_shape[0] not in (96, 128, 160, 192, 224):  # as Keras does
            warnings.warn("`input_shape` is undefined or non-square, or `rows` is not in [96, 128, 160, 192, "
                          "224]. Weights for input shape (224, 224) will be loaded as the default.")
        return real(input_shape=input_shape, include_top=include_top, weights=None)

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_mobilenet_unet((size, size, 3), encoder_weights="imagenet", stem_stride=stem_stride)
    assert requested == [((built_at, built_at, 3), "imagenet")]
    assert not [str(warning.message) for warning in caught if "input_shape" in str(warning.message)]
    assert model.get_layer("encoder").input.shape == (None, size, size, 3) and model.output_shape == (None, size, size, 3)


def snapshot(layer):
    return [w.numpy().copy() for w in layer.weights]


def one_step(model):
    """One fit step, run eagerly: tracing the MobileNetV2 U-Net's train step costs 5 to 25 s, one eager
    step about 1 s, and which weights a step changes is the same either way. (The scripts' traced
    steps are tested in test_training.py.)"""
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    rng = np.random.default_rng(0)
    x = rng.random((4, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 3, (4, 64, 64, 1))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)


def test_frozen_encoder_does_not_change_in_training_but_decoder_does():
    model = build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None)
    encoder, decoder = model.get_layer("encoder"), model.get_layer("up1")
    before_encoder, before_decoder = snapshot(encoder), snapshot(decoder)
    one_step(model)
    for a, b in zip(before_encoder, snapshot(encoder)):  # BatchNorm statistics included
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(before_decoder, snapshot(decoder)))


def test_encoder_from_random_weights_trains_its_batchnorm_too():
    model = build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None)
    set_encoder_trainable(model, True, batchnorm=True)
    bn = model.get_layer("encoder").get_layer("bn_Conv1")
    assert bn.trainable and bn.momentum == pytest.approx(0.99)
    moving_mean = bn.moving_mean.numpy().copy()
    one_step(model)
    assert not np.array_equal(moving_mean, bn.moving_mean.numpy())
    set_encoder_trainable(model, False)
    assert not bn.trainable and trainable_count(model) == 4_660_323  # frozen again: the decoder only


def test_fine_tuning_trains_the_encoder_with_batchnorm_in_inference_mode():
    tuned = build_mobilenet_unet((128, 128, 3), 3, encoder_weights=None, trainable_encoder=True)
    encoder_bn = sum(layer.count_params() for layer in tuned.get_layer("encoder").layers
                     if isinstance(layer, keras.layers.BatchNormalization))
    decoder_bn_statistics = 2 * (512 + 256 + 128 + 64)
    assert trainable_count(tuned) == 6_504_227 - encoder_bn - decoder_bn_statistics == 6_440_483
    model = build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None)
    set_encoder_trainable(model, True)
    encoder = model.get_layer("encoder")
    bn = encoder.get_layer("bn_Conv1")
    kernel, moving_mean = encoder.get_layer("Conv1").kernel.numpy().copy(), bn.moving_mean.numpy().copy()
    one_step(model)
    assert not np.array_equal(kernel, encoder.get_layer("Conv1").kernel.numpy())
    np.testing.assert_array_equal(moving_mean, bn.moving_mean.numpy())


def test_fine_tuning_from_a_layer_keeps_the_earlier_layers_frozen():
    model = build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None)
    encoder = model.get_layer("encoder")
    set_encoder_trainable(model, True, from_layer="block_13_expand")
    names = [layer.name for layer in encoder.layers]
    first = names.index("block_13_expand")
    later = sum(layer.count_params() for layer in encoder.layers[first:]
                if not isinstance(layer, keras.layers.BatchNormalization))
    assert trainable_count(model) == 4_660_323 + later == 5_914_083
    assert not encoder.get_layer("block_12_project").trainable and encoder.get_layer("block_13_expand").trainable
    assert not encoder.get_layer("block_13_expand_BN").trainable  # BatchNorm stays in inference mode
    kernels = {name: encoder.get_layer(name).kernel.numpy().copy() for name in ("block_12_project", "block_13_expand")}
    one_step(model)
    np.testing.assert_array_equal(kernels["block_12_project"], encoder.get_layer("block_12_project").kernel.numpy())
    assert not np.array_equal(kernels["block_13_expand"], encoder.get_layer("block_13_expand").kernel.numpy())
    with pytest.raises(ValueError, match="the encoder has no layer 'block_99'"):
        set_encoder_trainable(model, True, from_layer="block_99")


@pytest.mark.parametrize("builder", ["unet", "mobilenet"])
def test_models_save_and_load_in_safe_mode_with_the_same_predictions(builder, tmp_path):
    if builder == "unet":
        model = build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8))
    else:
        model = build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).random((2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_logits_stay_float32_under_mixed_precision(float32_policy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    for model in (build_unet((64, 64, 3), 3, filters=(4,) * 6), build_mobilenet_unet((64, 64, 3), encoder_weights=None)):
        assert model.get_layer("logits").compute_dtype == "float32"
        assert model.layers[2].compute_dtype == "float16"
        assert model(np.zeros((1, 64, 64, 3), "float32")).dtype == "float32"


# ---------------------------------------------------------------- upsample block


def test_upsample_block_doubles_size_without_bias():
    block = upsample(8, 3)
    out = block(np.zeros((2, 5, 7, 4), "float32"))
    assert out.shape == (2, 10, 14, 8)
    conv = block.layers[0]
    assert isinstance(conv, keras.layers.Conv2DTranspose) and conv.bias is None
    assert [type(layer).__name__ for layer in block.layers] == ["Conv2DTranspose", "BatchNormalization", "ReLU"]
    assert [type(layer).__name__ for layer in upsample(8, 3, apply_dropout=True).layers][2] == "Dropout"
    assert np.std(conv.kernel.numpy()) == pytest.approx(0.02, rel=0.1)


# ---------------------------------------------------------------- sizes (--crop)


def test_size_multiple_is_the_step_of_the_sizes_a_model_takes():
    assert sizes.size_multiple(build_mobilenet_unet((160, 160, 3), 3, encoder_weights=None)) == 32
    assert sizes.size_multiple(build_unet((192, 192, 3), 3, filters=(4, 4, 4, 4, 4, 4))) == 64
    assert sizes.size_multiple(build_unet((96, 96, 3), 3, filters=(4, 8, 8))) == 8


@pytest.mark.parametrize("builder", ["unet", "mobilenet"])
def test_a_model_for_whole_photos_trains_on_smaller_windows_and_keeps_its_size(builder, tmp_path):
    if builder == "unet":
        model, small = build_unet((128, 128, 3), 3, filters=(4, 8, 8, 8, 8, 8)), 64
    else:
        model, small = build_mobilenet_unet((96, 96, 3), 3, encoder_weights=None), 64
    size = model.input_shape[1]
    rng = np.random.default_rng(2)
    windows = rng.random((4, small, small, 3)).astype("float32")
    labels = rng.integers(0, 3, (4, small, small, 1))
    with pytest.raises(ValueError, match="incompatible"):  # what Keras says without accept_any_size
        model(windows)
    sizes.accept_any_size(model)
    # eagerly, as one_step: the scripts' traced steps on windows are tested in test_training.py (--crop)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    before = [w.copy() for w in model.get_weights()]
    model.fit(windows, labels, epochs=1, batch_size=4, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.predict(windows, verbose=0).shape == (4, small, small, 3)
    assert model.input_shape == (None, size, size, 3)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.input_shape == (None, size, size, 3)  # the file is a model of the photos' size
    photos = rng.random((2, size, size, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(photos, verbose=0), model.predict(photos, verbose=0), atol=1e-5)
