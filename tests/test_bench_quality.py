"""The quality benchmark's folds: which photos each one holds out."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality  # noqa: E402


def official_layout(root: Path) -> tuple[list[str], list[str]]:
    """Two breeds of 10 photos each, numbered 1 to 10; photos 5 and 10 of each are the test split."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    listed = [f"{breed}_{number} {klass} 1 1" for klass, breed in enumerate(["Bengal", "pug"], 1)
              for number in range(1, 11)]
    test = [line for line in listed if line.split()[0].endswith(("_5", "_10"))]
    trainval = [line for line in listed if line not in test]
    for name, lines in [("list.txt", listed), ("trainval.txt", trainval), ("test.txt", test)]:
        (root / "annotations" / name).write_text("\n".join(lines) + "\n")
    return trainval, test


def split(folder: Path, name: str) -> list[str]:
    return (folder / "annotations" / name).read_text().splitlines()


def test_fold_zero_is_the_folder_itself(tmp_path):
    official_layout(tmp_path / "pets")
    assert quality.fold_folder(tmp_path / "pets", 0, tmp_path / "folds") == tmp_path / "pets"
    assert not (tmp_path / "folds").exists()


def test_folds_hold_out_every_fourth_training_photo_of_each_breed_by_number(tmp_path):
    trainval, test = official_layout(tmp_path / "pets")
    held_out = {}
    for fold in range(1, quality.FOLDS):
        folder = quality.fold_folder(tmp_path / "pets", fold, tmp_path / "folds")
        assert folder == tmp_path / "folds" / f"pets-fold{fold}"
        assert (folder / "images").resolve() == (tmp_path / "pets" / "images").resolve()
        assert (folder / "annotations" / "trimaps").is_symlink()
        held_out[fold] = split(folder, "test.txt")
        # the rest trains, the folder's own validation photos included
        assert sorted(split(folder, "trainval.txt") + held_out[fold]) == sorted(trainval + test)
    names = {fold: [line.split()[0] for line in lines] for fold, lines in held_out.items()}
    # numbers in numeric order (1, 2, 3, 4, 6, 7, 8, 9), every fourth from the fold's place
    assert names[1] == ["Bengal_1", "Bengal_6", "pug_1", "pug_6"]
    assert names[2] == ["Bengal_2", "Bengal_7", "pug_2", "pug_7"]
    assert names[4] == ["Bengal_4", "Bengal_9", "pug_4", "pug_9"]
    assert sorted(sum(held_out.values(), [])) == sorted(trainval)


@pytest.mark.parametrize("fold", [-1, quality.FOLDS])
def test_folds_outside_the_range_are_refused(tmp_path, fold):
    official_layout(tmp_path / "pets")
    with pytest.raises(ValueError, match=f"fold {fold} is not one of 0 to 4"):
        quality.fold_folder(tmp_path / "pets", fold, tmp_path / "folds")


def test_script_runs_count_fine_tuning_epochs_in_the_total_and_take_the_encoder_weights(tmp_path):
    argv = quality.script_arguments("mobilenet", tmp_path / "pets", ["--fine-tune-epochs", "4"], 20, 3,
                                    tmp_path / "run", "imagenet")
    assert argv[argv.index("--epochs") + 1] == "16"  # 16 frozen + 4 fine-tuning
    assert argv[argv.index("--encoder-weights") + 1] == "imagenet"
    assert argv[argv.index("--seed") + 1] == "3" and argv[argv.index("--image-size") + 1] == "128"
    default = quality.script_arguments("mobilenet", tmp_path / "pets", [], 20, 1, tmp_path / "run")
    assert default[default.index("--epochs") + 1] == "10"  # the script's own 10 fine-tuning epochs
    assert default[default.index("--encoder-weights") + 1].endswith("mobilenet_v2_imagenet_1.0_224_no_top.h5")
    unet = quality.script_arguments("unet", tmp_path / "pets", ["--repeat", "1"], 20, 1, tmp_path / "run")
    assert "--encoder-weights" not in unet and unet[unet.index("--epochs") + 1] == "20"
    assert unet[-2:] == ["--repeat", "1"]
