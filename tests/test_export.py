"""export.py: both model kinds to both formats, loaded back and compared with the Keras model."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export
import inference
import predict
import train_mobilenet_unet
from conftest import run_main
from models import build_mobilenet_unet, build_unet


@pytest.fixture(scope="module", params=["unet", "mobilenet"])
def model_path(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "model.keras"
    if request.param == "unet":
        build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8)).save(path)
    else:
        build_mobilenet_unet((64, 64, 3), 3, encoder_weights=None,
                             **train_mobilenet_unet.architecture(64)).save(path)  # the script's model
    return path


def run(argv, capsys):
    return run_main(export.main, argv, capsys)


def reported_agreement(stdout: str) -> float:
    return float(stdout.split("mask agreement with the Keras model on 8 images: ")[1].split("%")[0]) / 100


def reference(model_path, images):
    return export.keras_masks(inference.load_keras_model(model_path), images)


# The MobileNetV2 U-Net takes 15 s a conversion: here with dynamic quantization only; the
# unquantized conversion is checked against Keras by test_predict_accepts_the_tflite_model.
@pytest.mark.parametrize("model_path, quantize", [("unet", "none"), ("unet", "float16"), ("unet", "dynamic"),
                                                   ("mobilenet", "dynamic")], indirect=["model_path"])
def test_tflite_export_agrees_with_keras(model_path, tmp_path, capsys, quantize):
    out = tmp_path / "model.tflite"
    status, stdout, _ = run(["--model", model_path, "--format", "tflite", "--quantize", quantize, "--output", out], capsys)
    assert status == 0 and out.is_file() and f"wrote {out}" in stdout
    images = export.check_images(64)
    masks = export.run_tflite(out.read_bytes(), images)
    assert masks.shape == (8, 64, 64) and masks.dtype == np.uint8
    agreement = float(np.mean(masks == reference(model_path, images)))
    assert reported_agreement(stdout) == pytest.approx(agreement, abs=0.0001)
    if quantize == "none":
        assert agreement >= 0.99


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_tflite_export_of_a_mixed_precision_model_computes_in_float32(tmp_path, capsys, float32_policy, policy):
    # Seeded: an untrained model's classes are near ties, and 16-bit rounding flips some of them
    # against the float32 export: an unseeded draw once agreed on less than the 99% export.py
    # requires, for bfloat16 (seeds 0 to 7 gave 99.75% to 100%; seed 0 100%).
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)  # as --mixed-precision trains it
    trained = build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8))
    keras.mixed_precision.set_global_policy("float32")
    trained.save(tmp_path / "mixed.keras")
    copy = export.computing_in_float32(inference.load_keras_model(tmp_path / "mixed.keras"))
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    for kept, original in zip(copy.weights, trained.weights):
        np.testing.assert_array_equal(kept.numpy(), original.numpy())
    out = tmp_path / "model.tflite"
    status, stdout, _ = run(["--model", tmp_path / "mixed.keras", "--format", "tflite", "--output", out], capsys)
    assert status == 0 and f"wrote {out}" in stdout and reported_agreement(stdout) >= 0.99
    images = export.check_images(64)
    assert np.mean(export.run_tflite(out.read_bytes(), images) == reference(tmp_path / "mixed.keras", images)) >= 0.99


def test_a_float32_model_is_exported_as_it_is(model_path):
    model = inference.load_keras_model(model_path)
    assert export.computing_in_float32(model) is model


def test_saved_model_takes_any_size_and_agrees(model_path, tmp_path, capsys):
    out = tmp_path / "served"  # no suffix: a SavedModel folder, without --format
    status, stdout, _ = run(["--model", model_path, "--output", out], capsys)
    assert status == 0 and (out / "saved_model.pb").is_file()
    assert reported_agreement(stdout) >= 0.99
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    result = serve(images=tf.zeros((2, 90, 70, 3), tf.uint8))
    assert result["mask"].shape == (2, 64, 64) and result["mask"].dtype == tf.uint8
    assert result["logits"].shape == (2, 64, 64, 3)


@pytest.mark.parametrize("model_path", ["unet"], indirect=True)  # loading back is the same for both kinds
def test_a_saved_model_predicts_as_its_keras_model(model_path, tmp_path, capsys):
    out = tmp_path / "served"
    assert run(["--model", model_path, "--output", out], capsys)[0] == 0
    served = inference.load_predictor(out)
    assert (served.size, served.num_classes) == (64, 3)
    images = export.check_images(64)
    logits = served(images)
    assert logits.shape == (8, 64, 64, 3) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, inference.load_predictor(model_path)(images), atol=1e-4)
    with pytest.raises(ValueError, match="takes only the 64 px images it was exported for, not 128 px"):
        inference.load_predictor(out, size=128)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(images[0][:50]).save(photos / "a.png")
    status = run_main(predict.main, ["--model", out, "--input", photos, "--output", tmp_path / "masks"], capsys)[0]
    assert status == 0 and np.asarray(Image.open(tmp_path / "masks" / "a_mask.png")).shape == (50, 64)


def test_a_folder_that_is_no_saved_model_is_named(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="photos is a folder, not a model: give a .keras file, or a .tflite file or "
                                         "SavedModel folder made by export.py"):
        inference.load_predictor(tmp_path / "photos")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "saved_model.pb").write_bytes(b"not a protocol buffer")
    with pytest.raises(ValueError, match="other is not a SavedModel made by export.py"):
        inference.load_predictor(tmp_path / "other")


def test_predict_accepts_the_tflite_model(model_path, tmp_path, capsys):
    out = tmp_path / "model.tflite"  # the name says TFLite: no --format needed
    assert run(["--model", model_path, "--output", out], capsys)[0] == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(photos / "a.jpg")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / "b.png")
    status = run_main(predict.main, ["--model", out, "--input", photos, "--output", tmp_path / "masks"], capsys)[0]
    assert status == 0
    assert np.asarray(Image.open(tmp_path / "masks" / "a_mask.png")).shape == (50, 70)
    # the TFLite model gives the Keras model's mask on an image of the input size
    keras_dir = tmp_path / "keras_masks"
    assert run_main(predict.main, ["--model", model_path, "--input", photos, "--output", keras_dir], capsys)[0] == 0
    same = np.mean(np.asarray(Image.open(keras_dir / "b_mask.png")) == np.asarray(Image.open(tmp_path / "masks" / "b_mask.png")))
    assert same >= 0.99


def test_errors(model_path, tmp_path, capsys):
    status, _, err = run(["--model", tmp_path / "none.keras", "--format", "tflite", "--output", tmp_path / "m.tflite"], capsys)
    assert status == 2 and "no such file" in err
    status, _, err = run(["--model", model_path, "--format", "tflite", "--output", tmp_path / "no" / "m.tflite"], capsys)
    assert status == 2 and "does not exist" in err
    status, _, err = run(["--model", model_path, "--format", "saved_model", "--quantize", "float16",
                          "--output", tmp_path / "sm"], capsys)
    assert status == 2 and "--quantize applies to TFLite exports only" in err
    (tmp_path / "taken.tflite").write_bytes(b"mine")
    status, _, err = run(["--model", model_path, "--format", "tflite", "--output", tmp_path / "taken.tflite"], capsys)
    assert status == 2 and "already exists" in err and (tmp_path / "taken.tflite").read_bytes() == b"mine"


def test_an_output_whose_name_does_not_say_the_format_needs_format(model_path, tmp_path, capsys):
    status, _, err = run(["--model", model_path, "--output", tmp_path / "pets.onnx"], capsys)
    assert status == 2 and f"--output {tmp_path / 'pets.onnx'}: its name does not say the format" in err
    assert "give --format tflite or --format saved_model" in err and not (tmp_path / "pets.onnx").exists()


def test_overwrite_refuses_an_output_of_the_other_kind_before_any_work(model_path, tmp_path, capsys, monkeypatch):
    # refused before the model is even loaded
    monkeypatch.setattr(export, "load_keras_model", lambda path: pytest.fail("loaded the model"))
    folder = tmp_path / "photos.tflite"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"a photo")
    status, _, err = run(["--model", model_path, "--output", folder, "--overwrite"], capsys)
    assert status == 2 and f"--output {folder} is a folder; a TFLite export is one file" in err
    file = tmp_path / "notes"
    file.write_text("mine")
    status, _, err = run(["--model", model_path, "--output", file, "--overwrite"], capsys)
    assert status == 2 and f"--output {file} is a file; a SavedModel export is a folder" in err
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "dog.jpg").write_bytes(b"another photo")
    status, _, err = run(["--model", model_path, "--format", "saved_model", "--output", photos, "--overwrite"], capsys)
    assert status == 2 and f"--output {photos} is a folder that holds no SavedModel (no saved_model.pb)" in err
    assert (folder / "cat.jpg").read_bytes() == b"a photo" and file.read_text() == "mine"
    assert (photos / "dog.jpg").read_bytes() == b"another photo"


def test_overwrite_replaces_an_earlier_saved_model(tmp_path, capsys):
    model = tmp_path / "small.keras"
    build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8)).save(model)
    earlier = tmp_path / "served"
    earlier.mkdir()
    (earlier / "saved_model.pb").write_bytes(b"an earlier export")
    (earlier / "stale.txt").write_text("from the earlier export")
    status, stdout, _ = run(["--model", model, "--output", earlier, "--overwrite"], capsys)
    assert status == 0 and f"wrote {earlier}" in stdout
    assert not (earlier / "stale.txt").exists()
    assert (earlier / "saved_model.pb").read_bytes() != b"an earlier export"
    serve = tf.saved_model.load(str(earlier)).signatures["serving_default"]
    assert serve(images=tf.zeros((1, 64, 64, 3), tf.uint8))["mask"].shape == (1, 64, 64)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["served", "small.keras"]  # no scratch left


def test_a_failed_replacement_puts_the_earlier_export_back(tmp_path):
    earlier = tmp_path / "served"
    earlier.mkdir()
    (earlier / "saved_model.pb").write_bytes(b"an earlier export")
    with pytest.raises(FileNotFoundError):  # the new export is missing: the second rename fails
        export.replace_folder(tmp_path / "missing", earlier, aside=tmp_path / "aside")
    assert (earlier / "saved_model.pb").read_bytes() == b"an earlier export" and not (tmp_path / "aside").exists()


def test_unwritable_output_folder(model_path, tmp_path, capsys, monkeypatch):
    # root may write into a read-only folder, so ask os.access as an ordinary user would be answered
    monkeypatch.setattr(export.os, "access", lambda path, mode: False)
    status, _, err = run(["--model", model_path, "--format", "tflite", "--output", tmp_path / "m.tflite"], capsys)
    assert status == 2 and f"the folder {tmp_path} is not writable" in err
    assert not (tmp_path / "m.tflite").exists()


def test_unknown_format_is_refused_by_the_parser(model_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--model", str(model_path), "--format", "onnx", "--output", str(tmp_path / "m")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
