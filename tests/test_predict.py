"""predict.py: every valid image gets a mask of its own size; bad files are named and skipped."""

import hashlib
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageOps

import inference
import predict
from conftest import run_main
from models import build_unet
from visualize import overlay


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "unet.keras"
    keras.utils.set_random_seed(3)  # the same untrained model every run: some draws label every pixel alike
    build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8)).save(path)
    return path


def noise(height, width, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def seen_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """Valid images of mixed formats; value: (height, width) as a person sees them."""
    Image.fromarray(noise(50, 70)).save(folder / "rgb.jpg")
    Image.fromarray(noise(40, 30, 1)[..., 0]).save(folder / "grey.png")
    Image.fromarray(noise(33, 45, 4), "RGBA").save(folder / "rgba.png")
    Image.fromarray(noise(20, 28)).convert("P").save(folder / "palette.gif")
    Image.fromarray(noise(48, 64)).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated a quarter turn
    Image.fromarray(noise(40, 60)).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(noise(31, 29)).save(folder / "UPPER.JPG")
    Image.fromarray((np.arange(24 * 36).reshape(24, 36) * 70).astype(np.uint16)).save(folder / "sixteen.png")
    Image.fromarray(noise(25, 26)).save(folder / "bitmap.bmp")
    Image.fromarray(noise(27, 39, 4), "RGBA").save(folder / "web.webp", quality=80)
    return {"rgb": (50, 70), "grey": (40, 30), "rgba": (33, 45), "palette": (20, 28), "cmyk": (48, 64),
            "rotated": (60, 40), "UPPER": (31, 29), "sixteen": (24, 36), "bitmap": (25, 26), "web": (27, 39)}


def bad_files(folder: Path) -> set[str]:
    Image.fromarray(noise(80, 80, seed=1)).save(folder / "corrupt.jpg", quality=95)
    path = folder / "corrupt.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    (folder / "text.jpg").write_text("this is not a picture")
    (folder / "empty.png").write_bytes(b"")
    return {"corrupt.jpg", "text.jpg", "empty.png"}


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")}


def run(argv, capsys):
    return run_main(predict.main, argv, capsys)


def test_mixed_folder_masks_have_each_images_size_and_bad_files_are_skipped(model_path, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    sizes = seen_sizes(photos)
    bad = bad_files(photos)
    (photos / "notes.txt").write_text("ignored: not an image extension")
    before = fingerprint(photos)

    status, stdout, stderr = run(["--model", model_path, "--input", photos, "--output", out, "--batch-size", "4"], capsys)

    assert status == 1
    assert fingerprint(photos) == before
    assert f"wrote {len(sizes)} image(s)" in stdout and f"skipped {len(bad)}" in stdout
    for name in bad:
        assert f"skipped {photos / name}:" in stderr
    assert "the file is empty" in stderr and "not an image file" in stderr
    jpeg_inputs = {"rgb", "cmyk", "rotated", "UPPER"}  # their overlays are JPEG, the others PNG
    for stem, (height, width) in sizes.items():
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert mask.max() < 3
        picture = Image.open(out / f"{stem}_overlay.{'jpg' if stem in jpeg_inputs else 'png'}")
        assert picture.mode == "RGB" and picture.size == (width, height)
        assert picture.format == ("JPEG" if stem in jpeg_inputs else "PNG")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_mask.png" for s in sizes] + [f"{s}_overlay.{'jpg' if s in jpeg_inputs else 'png'}" for s in sizes])
    # a PNG overlay is exact
    grey = np.asarray(Image.open(photos / "grey.png").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "grey_overlay.png")),
                                  overlay(grey, np.asarray(Image.open(out / "grey_mask.png"))))


def test_jpeg_overlay_is_drawn_on_the_upright_photo(model_path, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    y, x = np.mgrid[0:60, 0:90]
    smooth = np.stack([x * 2.5, y * 4.0, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated a quarter turn
    Image.fromarray(smooth).save(photos / "turned.jpg", exif=exif, quality=95)
    assert run(["--model", model_path, "--input", photos, "--output", out], capsys)[0] == 0
    upright = np.asarray(ImageOps.exif_transpose(Image.open(photos / "turned.jpg")).convert("RGB"))
    mask = np.asarray(Image.open(out / "turned_mask.png"))
    drawn = np.asarray(Image.open(out / "turned_overlay.jpg")).astype(float)
    assert drawn.shape == (90, 60, 3)

    def blocks(picture):  # 10x10 averages: JPEG keeps them, a turned photo does not
        return np.asarray(picture, float).reshape(9, 10, 6, 10, 3).mean(axis=(1, 3))

    assert np.abs(blocks(drawn) - blocks(overlay(upright, mask))).mean() < 3
    assert np.abs(blocks(drawn) - blocks(overlay(upright[::-1, ::-1], mask))).mean() > 10


def test_outputs_are_not_overwritten_unless_asked(model_path, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    Image.fromarray(noise(30, 40)).save(photos / "a.png")
    assert run(["--model", model_path, "--input", photos, "--output", out, "--no-overlay"], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png"]
    (out / "a_mask.png").write_bytes(b"mine")
    status, _, stderr = run(["--model", model_path, "--input", photos, "--output", out, "--no-overlay"], capsys)
    assert status == 2 and "a_mask.png already exist; pass --overwrite" in stderr
    assert (out / "a_mask.png").read_bytes() == b"mine"
    status, _, _ = run(["--model", model_path, "--input", photos, "--output", out, "--no-overlay", "--overwrite"], capsys)
    assert status == 0 and np.asarray(Image.open(out / "a_mask.png")).shape == (30, 40)


def test_recursive_mirrors_sub_folders(model_path, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    (photos / "cats" / "small").mkdir(parents=True)
    Image.fromarray(noise(30, 40)).save(photos / "top.png")
    Image.fromarray(noise(20, 22)).save(photos / "cats" / "small" / "kit.jpeg")
    status, _, _ = run(["--model", model_path, "--input", photos, "--output", out, "--recursive"], capsys)
    assert status == 0
    assert np.asarray(Image.open(out / "cats" / "small" / "kit_mask.png")).shape == (20, 22)
    assert (out / "top_overlay.png").exists() and (out / "cats" / "small" / "kit_overlay.jpg").exists()
    status, _, _ = run(["--model", model_path, "--input", photos / "cats", "--output", tmp_path / "o2"], capsys)
    assert status == 2  # without --recursive that folder holds no image itself


def test_one_image_as_input(model_path, tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    Image.fromarray(noise(50, 70)).save(photos / "cat.jpg")
    Image.fromarray(noise(30, 40)).save(photos / "dog.png")
    status, stdout, _ = run(["--model", model_path, "--input", photos / "cat.jpg", "--output", out], capsys)
    assert status == 0 and "wrote 1 image(s)" in stdout
    assert sorted(path.name for path in out.iterdir()) == ["cat_mask.png", "cat_overlay.jpg"]
    assert np.asarray(Image.open(out / "cat_mask.png")).shape == (50, 70)
    # beside the photo only when asked, as for a folder
    status, _, err = run(["--model", model_path, "--input", photos / "dog.png", "--output", photos], capsys)
    assert status == 2 and f"--output {photos} is inside the input folder {photos}" in err
    status, _, _ = run(["--model", model_path, "--input", photos / "dog.png", "--output", photos,
                        "--write-into-input", "--no-overlay"], capsys)
    assert status == 0 and np.asarray(Image.open(photos / "dog_mask.png")).shape == (30, 40)


def test_the_paths_are_checked_before_the_model_is_loaded(model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(predict, "load_model_option", lambda args: pytest.fail("loaded the model"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    status, _, err = run(["--model", model_path, "--input", notes, "--output", tmp_path / "out"], capsys)
    assert status == 2 and f"--input {notes} is neither a folder nor an image (.jpg" in err
    status, _, err = run(["--model", model_path, "--input", tmp_path / "nowhere", "--output", tmp_path / "out"], capsys)
    assert status == 2 and f"--input {tmp_path / 'nowhere'}: no such folder or image" in err
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(noise(30, 40)).save(photos / "a.png")
    for out in (notes, notes / "masks"):
        status, _, err = run(["--model", model_path, "--input", photos, "--output", out], capsys)
        assert status == 2 and f"--output {out}: {notes} is a file, not a folder" in err
    assert notes.read_text() == "not a photo"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing model", "broken model", "missing input", "empty input", "output in input"])
def test_errors_that_stop_the_run(case, model_path, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(noise(30, 40)).save(photos / "a.png")
    model, source, out = model_path, photos, tmp_path / "out"
    expected = {
        "missing model": "no such file",
        "broken model": "cannot be loaded as a Keras model",
        "missing input": "no such folder or image",
        "empty input": "holds no images",
        "output in input": "is inside the input folder",
    }[case]
    if case == "missing model":
        model = tmp_path / "nothing.keras"
    elif case == "broken model":
        model = tmp_path / "broken.keras"
        model.write_bytes(b"not a zip archive")
    elif case == "missing input":
        source = tmp_path / "nowhere"
    elif case == "empty input":
        source = tmp_path / "empty"
        source.mkdir()
    else:
        out = photos / "masks"
    before = fingerprint(photos)
    status, _, stderr = run(["--model", model, "--input", source, "--output", out], capsys)
    assert status == 2 and expected in stderr and "Traceback" not in stderr
    assert fingerprint(photos) == before


def test_photos_in_a_format_it_cannot_read_are_named(model_path, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("scan.tiff", "phone.HEIC", "notes.txt"):
        (photos / name).write_bytes(b"whatever")
    status, _, stderr = run(["--model", model_path, "--input", photos, "--output", tmp_path / "out"], capsys)
    assert status == 2 and stderr.startswith(
        f"error: --input {photos} holds no images it reads (.jpg, .jpeg, .png, .bmp, .gif, .webp): 2 photo(s) in a "
        "format predict.py does not read (phone.HEIC, scan.tiff); convert them to JPEG or PNG")
    Image.fromarray(noise(30, 40)).save(photos / "a.png")
    status, _, stderr = run(["--model", model_path, "--input", photos, "--output", tmp_path / "out"], capsys)
    assert status == 0 and (tmp_path / "out" / "a_mask.png").is_file()
    assert ("warning: left out 2 photo(s) in a format predict.py does not read (phone.HEIC, scan.tiff); convert "
            "them to JPEG or PNG\n") in stderr


def test_huge_photo_is_segmented_in_bands(model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inference, "WHOLE_IMAGE_PIXELS", 1_000_000)
    monkeypatch.setattr(inference, "BAND_ROWS", 7)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(noise(1000, 1500)).save(photos / "big.jpg")
    status, _, _ = run(["--model", model_path, "--input", photos, "--output", tmp_path / "out"], capsys)
    assert status == 0
    assert np.asarray(Image.open(tmp_path / "out" / "big_mask.png")).shape == (1000, 1500)


def test_masks_average_the_mirror_image_unless_tta_none(model_path, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(noise(50, 70)).save(photos / "a.png")
    pixels, _ = inference.read_photo(photos / "a.png")
    small = inference.resize_image(pixels, 64).numpy()[None]
    predictor = inference.load_predictor(model_path)
    masks = {}
    for tta, extra in (("flip", []), ("none", ["--tta", "none"])):
        status, _, _ = run(["--model", model_path, "--input", photos, "--output", tmp_path / tta, "--no-overlay",
                            *extra], capsys)
        assert status == 0
        masks[tta] = np.asarray(Image.open(tmp_path / tta / "a_mask.png"))
        logits = inference.with_test_time_augmentation(predictor, tta)(small)[0]
        np.testing.assert_array_equal(masks[tta], inference.upsampled_argmax(logits, 50, 70))
    assert not np.array_equal(masks["flip"], masks["none"])  # an untrained model is far from symmetric


def test_size_predicts_the_photo_resized_for_the_model_at_that_size(model_path, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(noise(50, 70)).save(photos / "a.png")
    status, _, _ = run(["--model", model_path, "--input", photos, "--output", tmp_path / "out", "--no-overlay",
                        "--tta", "none", "--size", "128"], capsys)
    assert status == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "a_mask.png"))
    pixels, _ = inference.read_photo(photos / "a.png")
    model = build_unet((128, 128, 3), 3, filters=(4, 8, 8, 8, 8, 8))
    model.set_weights(inference.load_keras_model(model_path).get_weights())
    logits = model(inference.resize_image(pixels, 128).numpy()[None].astype(np.float32) / 255.0).numpy()[0]
    np.testing.assert_array_equal(mask, inference.upsampled_argmax(logits, 50, 70))
    status, _, stderr = run(["--model", model_path, "--input", photos, "--output", tmp_path / "odd", "--size", "96"],
                            capsys)
    assert status == 2 and "--size 96: the model cannot take 96 px images" in stderr
    assert not (tmp_path / "odd").exists()


def test_real_oxford_photos(oxford_sample, model_path, tmp_path, capsys):
    photos = oxford_sample / "images"
    status, stdout, _ = run(["--model", model_path, "--input", photos, "--output", tmp_path, "--no-overlay"], capsys)
    assert status == 0 and "wrote 26 image(s)" in stdout
    for path in photos.glob("*.jpg"):
        width, height = Image.open(path).size
        assert np.asarray(Image.open(tmp_path / f"{path.stem}_mask.png")).shape == (height, width)
