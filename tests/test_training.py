"""The training scripts end to end on small data, their artifacts, resume, devices and errors."""

import csv
import hashlib
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data
import errors
import evaluation
import options
import rundir
import train_mobilenet_unet
import train_unet
import training
from conftest import run_main, run_subprocess, schedule_config
from inference import keras_predictor, with_test_time_augmentation
from models.mobilenet_unet import stem_stride_of

SMALL_UNET = ["--filters", "4,8,8,8,8,8"]
QUICK = ["--data", "synthetic", "--image-size", "64", "--limit", "16", "--batch-size", "8", "--seed", "1",
         "--repeat", "1"]
METRIC_COLUMNS = {"epoch", "loss", "accuracy", "mean_iou", "iou_pet", "iou_background", "iou_border",
                  "val_loss", "val_accuracy", "val_mean_iou", "val_iou_pet", "val_iou_background", "val_iou_border"}


def read_history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as file:
        return list(csv.DictReader(file))


_SAVED: dict[str, keras.Model] = {}


def saved_model(path: Path) -> keras.Model:
    """The model saved at `path`, loaded in safe mode once for each version of the file.

    Loading the MobileNetV2 U-Net takes about 3 s, and a test reads its run's last.keras several
    times, and best.keras, often the very same file. The key is the file's bytes, so a file a
    resumed run rewrote is loaded afresh. Only the newest two versions are kept (best and last),
    and callers must not change the model they get.
    """
    key = hashlib.sha256(path.read_bytes()).hexdigest()
    if key not in _SAVED:
        while len(_SAVED) >= 2:
            del _SAVED[next(iter(_SAVED))]
        _SAVED[key] = keras.models.load_model(path, safe_mode=True)
    return _SAVED[key]


def check_run_folder(run: Path, epochs: int, size: int = 64, test_images: int = 16) -> dict:
    for name in ("best.keras", "last.keras"):
        model = saved_model(run / name)
        assert model.predict(np.zeros((2, size, size, 3), "float32"), verbose=0).shape == (2, size, size, 3)
    rows = read_history(run)
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))
    assert set(rows[0]) == METRIC_COLUMNS
    assert all(0.0 <= float(rows[-1][key]) <= 1.0 for key in ("accuracy", "val_mean_iou"))
    for picture in ["curves.png"] + [f"predictions/epoch_{e:03d}.png" for e in range(1, epochs + 1)]:
        with Image.open(run / picture) as image:
            assert image.format == "PNG" and image.width > 300
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "accuracy", "mean_iou", "iou_per_class", "evaluated_model", "tta",
                                    "original_size"}
    assert set(metrics["test"]["iou_per_class"]) == {"pet", "background", "border"}
    original = metrics["test"]["original_size"]
    assert set(original) == {"accuracy", "mean_iou", "iou_per_class", "dice_per_class", "pixels"}
    # synthetic photos are made at the model's size: both evaluations count the same pixels
    assert original["pixels"] == test_images * size * size
    assert original["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    assert metrics["epochs_completed"] == epochs
    assert np.isfinite(metrics["test"]["loss"])
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == "synthetic" and config["image_size"] == size
    assert metrics["test"]["tta"] == config["tta"]
    assert not [p.name for p in run.rglob(".*tmp*")]  # no temporary file left behind
    assert not [p.name for p in run.glob(".*.epoch-*")]  # nor a staged model
    return metrics


def fresh_figures(model: keras.Model) -> dict:
    """`model` scored afresh with the scripts' default flips on the 16 synthetic test photos QUICK's runs
    evaluate: a run's metrics.json must give the same figures for its saved model."""
    _, photos = data.photos("synthetic", "test", data.DataOptions(image_size=64, limit=16))
    predictor = with_test_time_augmentation(keras_predictor(model), "flip")
    return evaluation.evaluate(predictor, photos, list(data.OXFORD_CLASS_NAMES)).figures()


def test_train_unet_one_epoch_leaves_a_complete_run(tmp_path):
    run = tmp_path / "run"
    assert train_unet.main(QUICK + SMALL_UNET + ["--epochs", "1", "--val-examples", "5", "--repeat", "2",
                                                 "--tta", "none", "--output", str(run)]) == 0
    metrics = check_run_folder(run, epochs=1)  # the final evaluation covers all 16 test examples
    assert metrics["validation_examples"] == 4  # every 4th of the 16 after each epoch
    # two passes over the 16 training examples in batches of 8: 4 steps in the epoch
    assert int(saved_model(run / "last.keras").optimizer.iterations.numpy()) == 4
    assert metrics["recipe"]["repeat"] == 2
    # the test figures come from one pass over the photos; Keras' evaluate of the saved model, on
    # batches weighted as the loss weighs them (the outline 3, the default), agrees
    assert metrics["recipe"]["outline_weight"] == 3.0
    keras_figures = saved_model(run / "last.keras").evaluate(
        data.build_dataset("synthetic", "test", data.DataOptions(image_size=64, limit=16), batch_size=8,
                           outline_weight=3.0), return_dict=True, verbose=0)
    for name in ("loss", "accuracy", "mean_iou"):
        assert metrics["test"][name] == pytest.approx(keras_figures[name], abs=1e-5)
    assert metrics["test"]["iou_per_class"]["pet"] == pytest.approx(keras_figures["iou_pet"], abs=1e-5)
    assert metrics["settings"]["filters"] == [4, 8, 8, 8, 8, 8]
    # the best epoch is the last: best.keras is that very file, linked rather than written twice
    assert (run / "best.keras").read_bytes() == (run / "last.keras").read_bytes()
    assert (run / "logs" / "train").is_dir() and (run / "logs" / "validation").is_dir()  # TensorBoard
    assert metrics["parameters"]["total"] == saved_model(run / "last.keras").count_params()


def test_train_mobilenet_unet_from_local_weights_then_fine_tuning(tmp_path, monkeypatch, random_mobilenet_weights):
    traces = []  # train_step runs in Python only while Keras traces it
    original_train_step = keras.Model.train_step
    monkeypatch.setattr(keras.Model, "train_step", lambda model, batch: traces.append(1) or original_train_step(model, batch))
    marked = []
    curves = rundir.visualize.TrainingCurves
    monkeypatch.setattr(rundir.visualize, "TrainingCurves", lambda starts=(): marked.append(list(starts)) or curves(starts))
    run = tmp_path / "run"
    argv = QUICK + ["--encoder-weights", str(random_mobilenet_weights), "--epochs", "1", "--fine-tune-epochs", "1",
                    "--output", str(run)]
    assert train_mobilenet_unet.main(argv) == 0
    assert len(traces) == 2  # once a phase: an optimizer left to build inside the trace makes that twice
    check_run_folder(run, epochs=2)
    last = saved_model(run / "last.keras")
    encoder = last.get_layer("encoder")
    assert encoder.trainable and not encoder.get_layer("bn_Conv1").trainable  # fine-tuned, BatchNorm frozen
    assert stem_stride_of(last) == 1  # --stem-stride auto at 64 px: unstrided once fine-tuning starts
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] in (1, 2)
    # fine-tuning trains the encoder at --fine-tune-learning-rate's peak, the rest at the decoder's
    assert type(last.optimizer) is keras.optimizers.MultiOptimizer
    trained_with = {schedule_config(inner)["warmup_target"]: (len(inner.variables) - 1) // 2
                    for inner in last.optimizer.optimizers}  # AdamW: its step count, then two moments a weight
    encoder_weights = len(encoder.trainable_weights)
    assert encoder_weights == 33  # the kernels of blocks 6 to 16, BatchNorm frozen
    assert trained_with == pytest.approx({3e-4: encoder_weights, 1e-3: len(last.trainable_weights) - encoder_weights})
    assert (metrics["recipe"]["fine_tune_learning_rate"], metrics["recipe"]["fine_tune_decoder_learning_rate"]) == (
        3e-4, 1e-3)
    assert marked == [[(2, "fine-tuning")]]  # curves.png marks where the fine-tuning starts


def test_train_unet_on_the_real_oxford_sample(oxford_sample, tmp_path):
    run = tmp_path / "run"
    argv = ["--data", str(oxford_sample), "--image-size", "64", "--batch-size", "6", "--epochs", "1",
            "--repeat", "1", "--output", str(run)] + SMALL_UNET
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_unet.main(argv) == 0
    # the folder's batches are not counted ahead; Keras' "ran out of data" advice does not apply
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]["iou_per_class"]) == {"pet", "background", "border"}
    assert len(read_history(run)) == 1


def test_each_epoch_saves_the_model_and_draws_the_predictors_masks(tmp_path):
    from keras.src.saving import saving_lib

    from models import build_unet

    model = build_unet((64, 64, 3), 3, filters=(4, 8, 8, 8, 8, 8))
    images = np.full((2, 64, 64, 3), 128, np.uint8)
    masks = np.zeros((2, 64, 64, 1), np.uint8)  # all "pet" (orange)
    calls = []

    def border_everywhere(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        logits = np.zeros((*batch.shape[:3], 3), np.float32)
        logits[..., 2] = 1.0
        return logits

    run = rundir.RunDir.create(tmp_path / "run")
    recorder = rundir.RunRecorder(run, images, masks, border_everywhere)
    recorder.set_model(model)
    recorder.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.1, "accuracy": 0.5, "val_accuracy": 0.5, "val_mean_iou": 0.25})
    assert calls == [(2, 64, 64, 3)]
    assert json.loads((run.path / "state.json").read_text()) == {"completed_epochs": 1}
    loaded = keras.models.load_model(run.path / "last.keras")
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))
    # Keras' list of a layer's attributes that saving skips is now kept between saves
    assert saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")
    with Image.open(run.path / "predictions" / "epoch_001.png") as picture:
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(pixels, axis=0)}
    assert (241, 196, 15) in colours  # the predicted column: border yellow, from the predictor
    assert (230, 126, 34) in colours  # the true column: pet orange


def test_a_kill_at_any_point_of_an_epochs_writes_leaves_the_counted_epochs_models(tmp_path):
    def model_with(value: float) -> keras.Model:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
        model.layers[0].bias.assign([value])
        return model

    def bias(path) -> float:
        return float(keras.models.load_model(path).layers[0].bias.numpy()[0])

    run = rundir.RunDir.create(tmp_path / "run")
    (run.path / "config.json").write_text(json.dumps({"script": "train_unet"}))
    # killed after epoch 1 was counted, before its models were renamed into place
    run.stage_model(model_with(1.0), "last.keras", 1)
    run.stage_copy("last.keras", "best.keras", 1)
    (run.path / "state.json").write_text(json.dumps({"completed_epochs": 1}))
    assert not (run.path / "last.keras").exists()
    assert bias(run.committed_file("last.keras")) == 1.0  # what a reader that must not write loads
    assert options.read_config(run.path, "train_unet")["script"] == "train_unet"  # resumable as it is
    worker = rundir.RunDir.create(tmp_path / "worker")  # a multi-worker run's worker copies, and may not finish
    run.copy_committed_models(worker)
    assert bias(worker.path / "last.keras") == 1.0 and bias(worker.path / "best.keras") == 1.0
    assert not (run.path / "last.keras").exists()
    run.recover()
    assert bias(run.path / "last.keras") == 1.0 and bias(run.path / "best.keras") == 1.0
    assert run.committed_file("last.keras") == run.path / "last.keras"
    # killed while epoch 2's models were being staged, before it was counted
    run.stage_model(model_with(2.0), "last.keras", 2)
    run.stage_copy("last.keras", "best.keras", 2)
    (run.path / ".last.epoch-002.tmp-99999.keras").write_bytes(b"half a zip")
    assert bias(run.committed_file("last.keras")) == 1.0
    run.recover()
    assert bias(run.path / "last.keras") == 1.0 and bias(run.path / "best.keras") == 1.0
    assert sorted(p.name for p in run.path.iterdir()) == ["best.keras", "config.json", "last.keras", "predictions",
                                                          "state.json"]
    # a whole commit: epoch 2 counted, its last.keras in place, the best model still epoch 1's
    run.stage_model(model_with(2.0), "last.keras", 2)
    run.commit_epoch(2)
    assert json.loads((run.path / "state.json").read_text()) == {"completed_epochs": 2}
    assert bias(run.path / "last.keras") == 2.0 and bias(run.path / "best.keras") == 1.0
    assert not list(run.path.glob(".*"))
    # a resume's longer plan is kept by the commits that follow
    run.plan_epochs({"epochs": 5})
    run.stage_model(model_with(3.0), "last.keras", 3)
    run.commit_epoch(3)
    assert json.loads((run.path / "state.json").read_text()) == {"completed_epochs": 3, "planned": {"epochs": 5}}
    assert run.planned_epochs() == {"epochs": 5} and run.completed_epochs() == 3


def interrupt_after_each_epoch(monkeypatch):
    """Ctrl-C as each epoch's files are written; returns the recorder's own method, to put back."""
    original = rundir.RunRecorder.on_epoch_end

    def interrupt(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.RunRecorder, "on_epoch_end", interrupt)
    return original


def test_a_run_stopped_before_its_first_epoch_finished_starts_again_on_resume(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"

    def interrupt(self, epoch, logs=None):
        raise KeyboardInterrupt  # before the epoch's files are written

    monkeypatch.setattr(rundir.RunRecorder, "on_epoch_end", interrupt)
    assert train_unet.main(QUICK + SMALL_UNET + ["--epochs", "1", "--output", str(run)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: before the first epoch finished; start it again with --resume {run}\n" in err
    assert json.loads((run / "state.json").read_text()) == {"completed_epochs": 0}
    assert not (run / "last.keras").exists()
    monkeypatch.undo()
    assert train_unet.main(["--resume", str(run)]) == 0
    check_run_folder(run, epochs=1)
    (run / "state.json").write_text("{")
    status, _, err = run_main(train_unet.main, ["--resume", str(run)], capsys)
    assert status == 2 and f"--resume {run}: {run / 'state.json'} does not count the finished epochs" in err


def test_ctrl_c_saves_and_resume_continues_from_the_saved_epoch(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    original = interrupt_after_each_epoch(monkeypatch)
    assert train_unet.main(QUICK + SMALL_UNET + ["--epochs", "3", "--output", str(run)]) == 130
    out, err = capsys.readouterr()
    assert f"interrupted: {run / 'last.keras'} and the history hold the 1 finished epoch; continue with --resume {run}\n" in err
    assert "16 training and 16 test examples (16 scored after each epoch); 2 steps an epoch\n" in out
    assert "epochs 1 to 3" not in out  # one phase: no heading
    assert json.loads((run / "state.json").read_text()) == {"completed_epochs": 1}
    assert len(read_history(run)) == 1 and not (run / "metrics.json").exists()
    steps = int(saved_model(run / "last.keras").optimizer.iterations.numpy())
    assert steps == 2  # 16 examples in batches of 8

    monkeypatch.setattr(rundir.RunRecorder, "on_epoch_end", original)
    assert train_unet.main(["--resume", str(run)]) == 0
    check_run_folder(run, epochs=3)
    assert int(saved_model(run / "last.keras").optimizer.iterations.numpy()) == 6
    assert train_unet.main(["--resume", str(run)]) == 0  # nothing left to train: evaluates again
    metrics = check_run_folder(run, epochs=3)
    # the default final evaluation is predict.py's: logits averaged with the mirror image's
    assert metrics["test"]["tta"] == "flip"
    figures = fresh_figures(saved_model(run / "last.keras"))
    assert metrics["test"]["mean_iou"] == pytest.approx(figures["model_size"]["mean_iou"], abs=1e-6)
    assert metrics["test"]["original_size"]["mean_iou"] == pytest.approx(figures["original_size"]["mean_iou"], abs=1e-6)


def test_class_and_outline_weights_change_the_loss(tmp_path):
    losses = {}
    runs = {"plain": (["--outline-weight", "1"], dict(class_weights=None, outline_weight=1.0)),
            "classes": (["--class-weights", "5,5,0.1", "--outline-weight", "1"],
                        dict(class_weights="5,5,0.1", outline_weight=1.0)),
            "outline": ([], dict(class_weights=None, outline_weight=3.0))}  # the default
    for name, (extra, settings) in runs.items():
        run = tmp_path / name
        assert train_unet.main(QUICK + SMALL_UNET + ["--epochs", "1", "--tta", "none", "--output", str(run)]
                               + extra) == 0
        losses[name] = float(read_history(run)[0]["loss"])
        config = json.loads((run / "config.json").read_text())
        assert {key: config[key] for key in settings} == settings
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["recipe"]["outline_weight"] == settings["outline_weight"]
        if name == "plain":
            continue
        assert losses[name] != pytest.approx(losses["plain"], rel=0.05)
        # the run's test loss is Keras' evaluate of its model on the test batches weighted the same way
        weights = [5, 5, 0.1] if settings["class_weights"] else None
        evaluated = saved_model(run / "last.keras").evaluate(data.build_dataset(
            "synthetic", "test", data.DataOptions(image_size=64, limit=16), batch_size=8, class_weights=weights,
            outline_weight=settings["outline_weight"]), return_dict=True, verbose=0)
        assert metrics["test"]["loss"] == pytest.approx(evaluated["loss"], abs=1e-5)


@pytest.mark.parametrize("loss", ["dice", "focal", "sce+dice"])
def test_every_loss_trains_and_reloads(tmp_path, loss):
    run = tmp_path / "run"
    argv = QUICK + SMALL_UNET + ["--epochs", "1", "--loss", loss, "--class-weights", "balanced", "--output", str(run)]
    assert train_unet.main(argv) == 0
    model = saved_model(run / "last.keras")
    assert type(model.loss).__name__ == {"dice": "DiceLoss", "focal": "FocalLoss", "sce+dice": "CrossEntropyDiceLoss"}[loss]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_trains_every_replica_also_after_the_stem_stride_switch(
        tmp_path, random_mobilenet_weights):
    """Two logical CPUs stand for two GPUs. The MobileNetV2 default at 128 px rebuilds the model when
    fine-tuning starts (--stem-stride 2,1): the new model's variables must be mirrored again and trained
    by every replica, and the model saved must be the one they trained."""
    run = tmp_path / "run"
    argv = QUICK + ["--encoder-weights", str(random_mobilenet_weights), "--stem-stride", "2,1", "--epochs", "1",
                    "--fine-tune-epochs", "1", "--decoder-filters", "32,16,16,8", "--strategy", "mirrored",
                    "--output", str(run)]
    code = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "import sys, train_mobilenet_unet\n"
        f"sys.exit(train_mobilenet_unet.main({argv!r}))\n"
    )
    result = run_subprocess(["-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training on 2 replica(s) with MirroredStrategy" in result.stdout
    metrics = check_run_folder(run, epochs=2)
    last = saved_model(run / "last.keras")
    assert stem_stride_of(last) == 1 and last.get_layer("encoder").get_layer("block_6_expand").trainable
    assert f"weights digest {training.weights_digest(last)}" in result.stdout  # the model trained is the one saved
    assert metrics["test"]["mean_iou"] == pytest.approx(fresh_figures(last)["model_size"]["mean_iou"], abs=1e-6)


@pytest.mark.parametrize("given, compute", [([], "float16"), (["bfloat16"], "bfloat16")])
def test_mixed_precision_trains_with_float32_logits(tmp_path, float32_policy, given, compute):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert train_unet.main(QUICK + SMALL_UNET + ["--epochs", "1", "--mixed-precision", *given,
                                                     "--output", str(run)]) == 0
    expected = training.precision_warning(compute, bool(tf.config.list_physical_devices("GPU")),
                                          training.cpu_has_bfloat16())  # float16 always here, without a GPU
    assert [str(w.message) for w in shown if issubclass(w.category, errors.Notice)] == ([expected] if expected else [])
    model = saved_model(run / "last.keras")
    assert model.get_layer("enc1_conv").compute_dtype == compute
    assert model.get_layer("enc1_conv").kernel.dtype == "float32"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == compute
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["test"]["loss"])


def test_precision_warnings_say_what_a_16_bit_type_costs_without_a_gpu(tmp_path):
    assert training.precision_warning(None, False, False) is None
    assert training.precision_warning("float16", True, False) is None  # a GPU computes it
    assert training.precision_warning("float16", False, True).startswith(
        "--mixed-precision float16 without a GPU: CPUs compute float16 slowly (a training step took 2 to 3 times as long")
    assert training.precision_warning("bfloat16", False, False).startswith(
        "--mixed-precision bfloat16 on a CPU without bfloat16 instructions (AVX512_BF16, AMX): TensorFlow emulates")
    assert training.precision_warning("bfloat16", False, True) is None
    assert training.precision_warning("bfloat16", False, None) is None  # unknown: no guess
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert training.cpu_has_bfloat16(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert training.cpu_has_bfloat16(info) is False
    info.write_text("processor\t: 0\n")
    assert training.cpu_has_bfloat16(info) is None
    assert training.cpu_has_bfloat16(tmp_path / "none") is None


def test_multiworker_needs_tf_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    status, err = run_script(train_unet, QUICK + ["--strategy", "multiworker", "--output", str(tmp_path / "r")], capsys)
    assert status == 2 and "--strategy multiworker needs the TF_CONFIG environment variable" in err


def test_jit_compile_choice():
    assert training.resolve_jit_compile("off") is False
    assert training.resolve_jit_compile("on") is True
    assert training.resolve_jit_compile("auto") is False  # no GPU here: XLA measured 2 to 3.5x slower on CPU


def test_help_documents_every_option():
    for module in (train_unet, train_mobilenet_unet):
        text = module.build_parser().format_help()
        for option in ("--data", "--image-size", "--batch-size", "--epochs", "--learning-rate", "--limit",
                       "--seed", "--output", "--num-classes", "--class-weights", "--loss", "--jit-compile",
                       "--mixed-precision", "--strategy", "--resume"):
            assert option in text
    assert "--fine-tune-epochs" in train_mobilenet_unet.build_parser().format_help()
    assert "--encoder-weights" in train_mobilenet_unet.build_parser().format_help()


# ---------------------------------------------------------------- user errors


def run_script(module, argv, capsys):
    status, _, err = run_main(module.main, argv, capsys)
    return status, err


def test_image_size_the_model_cannot_take(tmp_path, capsys):
    status, err = run_script(train_unet, QUICK + ["--image-size", "100", "--output", str(tmp_path / "r")], capsys)
    assert status == 2
    assert ("error: --image-size 100 with --filters 16,32,64,128,256,512 (6 levels): the U-Net needs a height "
            "that is a multiple of 64") in err


def test_data_folder_of_no_known_layout(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    status, err = run_script(train_unet, ["--data", str(tmp_path / "photos"), "--output", str(tmp_path / "r")], capsys)
    assert status == 2 and "matches no known data layout" in err


def test_resume_of_a_folder_that_holds_no_run(tmp_path, capsys):
    status, err = run_script(train_unet, ["--resume", str(tmp_path)], capsys)
    assert status == 2 and f"--resume {tmp_path}: that folder holds no run to resume" in err


def test_class_weights_of_the_wrong_length(tmp_path, capsys):
    status, err = run_script(train_unet, QUICK + ["--class-weights", "1,2", "--output", str(tmp_path / "r")], capsys)
    assert status == 2 and "give 2 values for 3 classes" in err


def test_existing_output_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    status, err = run_script(train_unet, QUICK + ["--output", str(tmp_path)], capsys)
    assert status == 2 and "already exists and is not empty" in err
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    under_a_file = tmp_path / "mine.txt" / "run"
    status, err = run_script(train_unet, QUICK + ["--output", str(under_a_file)], capsys)
    assert status == 2 and f"--output {under_a_file}: {tmp_path / 'mine.txt'} is a file, not a folder" in err
    status, err = run_script(train_unet, QUICK + ["--output", str(tmp_path / "mine.txt")], capsys)
    assert status == 2 and f"error: --output {tmp_path / 'mine.txt'} is a file, not a folder; choose a new folder" in err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_dataset_download_failure_names_the_offline_route(tmp_path, capsys, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "dataset_server_reachable", lambda timeout=10.0: False)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: False)
    status, err = run_script(train_mobilenet_unet, ["--encoder-weights", "none", "--output", str(tmp_path / "r")], capsys)
    assert status == 2 and "cannot download oxford_iiit_pet" in err and "--data DIR" in err
    assert not (tmp_path / "r").exists()  # a run that never started leaves no folder


def test_imagenet_weights_download_failure_names_the_alternatives(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/weights.h5: None -- no network")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    status, err = run_script(train_mobilenet_unet, QUICK + ["--output", str(tmp_path / "r")], capsys)
    assert status == 2 and not (tmp_path / "r").exists()
    assert "ImageNet weights for the MobileNetV2 encoder could not be downloaded" in err
    assert "--encoder-weights none" in err and "--encoder-weights PATH" in err


@pytest.mark.slow
def test_user_errors_print_no_traceback_from_the_shell(tmp_path):
    result = run_subprocess(["train_unet.py", "--data", tmp_path / "missing", "--output", tmp_path / "r"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: --data {tmp_path / 'missing'}: data source '{tmp_path / 'missing'}' is neither" in result.stderr


# ---------------------------------------------------------------- learning

# Measured with the command in this test: test mean IoU 0.869, 0.865 and 0.854 with seeds 0, 1
# and 2 after 5 epochs of 32 steps (0.889 after 13); predicting "background" everywhere scores
# about 0.23. At the recipe's BatchNorm momentum of 0.9 the moving averages have caught up with
# the weights long before: validation scored 0.79 to 0.82 after epoch 2, 0.84 to 0.85 after 5.
LEARNING_BAR = 0.75


@pytest.mark.slow
def test_small_unet_learns_the_synthetic_set(tmp_path):
    """160 steps of a 4-level U-Net at 32x32, in inference mode afterwards: BatchNorm's averages caught up."""
    run = tmp_path / "run"
    argv = ["--data", "synthetic", "--image-size", "32", "--limit", "512", "--batch-size", "16", "--epochs", "5",
            "--repeat", "1", "--val-examples", "32", "--filters", "16,32,64,128", "--seed", "0", "--output", str(run)]
    assert train_unet.main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["mean_iou"] > LEARNING_BAR


@pytest.mark.parametrize("option, value, message", [
    ("--epochs", "0", "--epochs must be at least 1, got 0"),
    ("--limit", "0", "--limit must be at least 1, got 0"),
    ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("--learning-rate", "-1", "--learning-rate must be positive, got -1.0"),
    ("--crop", "0", "--crop must be at least 1, got 0"),
    ("--crop", "128", "--crop 128 is larger than --image-size 64: a training window is a part of the resized photo"),
])
def test_bad_numbers_are_refused(tmp_path, capsys, option, value, message):
    status, err = run_script(train_unet, QUICK + [option, value, "--output", str(tmp_path / "r")], capsys)
    assert status == 2 and message in err
    assert not (tmp_path / "r").exists()


def test_training_on_windows_validates_saves_and_resumes_at_the_photos_size(tmp_path, monkeypatch):
    shapes = []
    original_batches = data.batches

    def recording_batches(split, **kwargs):
        ds = original_batches(split, **kwargs)
        shapes.append((kwargs.get("training", False), tuple(ds.element_spec[0].shape)))
        return ds

    monkeypatch.setattr(data, "batches", recording_batches)
    run = tmp_path / "run"
    argv = QUICK + SMALL_UNET + ["--image-size", "128", "--crop", "64", "--epochs", "1", "--tta", "none",
                                "--output", str(run)]
    assert train_unet.main(argv) == 0
    assert sorted(shapes) == [(False, (None, 128, 128, 3)), (True, (None, 64, 64, 3))]
    metrics = check_run_folder(run, epochs=1, size=128)  # models, validation and evaluation at 128 px
    assert metrics["recipe"]["crop"] == 64
    assert train_unet.main(["--resume", str(run), "--epochs", "2"]) == 0  # the loaded model takes windows too
    check_run_folder(run, epochs=2, size=128)


def test_a_window_the_model_cannot_take_is_refused_before_training(tmp_path, capsys):
    argv = QUICK + SMALL_UNET + ["--image-size", "128", "--crop", "96", "--output", str(tmp_path / "r")]
    status, err = run_script(train_unet, argv, capsys)
    assert status == 2 and "--crop 96: this model takes sizes in steps of 64 px (96 is not a multiple)" in err
    assert not (tmp_path / "r").exists()


def test_mobilenet_unet_options_reach_the_trained_model(tmp_path, capsys):
    """One run from scratch with every architecture option set: each must reach the saved model.

    --stem-stride is left at 'auto', which from random weights keeps MobileNetV2's stride 2.
    (One run, not one each: most of a MobileNetV2 run's time in a test is tracing the encoder.)
    """
    run = tmp_path / "run"
    argv = QUICK + ["--encoder-weights", "none", "--decoder-filters", "16,8,8,4", "--fuse-filters", "0,12,0,0",
                    "--skips", "outputs", "--bn-momentum", "0.95", "--epochs", "1",
                    "--fine-tune-epochs", "0", "--tta", "none",
                    "--output", str(run)]
    assert train_mobilenet_unet.main(argv) == 0
    model = saved_model(run / "last.keras")
    assert [model.get_layer(f"up{i}").layers[0].filters for i in (1, 2, 3, 4)] == [16, 8, 8, 4]
    assert [layer.name for layer in model.layers if "fuse" in layer.name] == ["up2_fuse"]
    assert model.get_layer("up2_fuse").layers[0].filters == 12
    # the block outputs: block_12's and block_5's (96 and 32 channels) join up1's and up2's
    assert [model.get_layer(f"up{i}_concat").output.shape[-1] for i in (1, 2)] == [16 + 96, 8 + 32]
    encoder = model.get_layer("encoder")  # from scratch: the whole encoder trains, BatchNorm too
    assert encoder.get_layer("Conv1").strides == (2, 2) and not [layer for layer in encoder.layers if "pool" in layer.name]
    bn = encoder.get_layer("bn_Conv1")
    assert encoder.trainable and bn.trainable and bn.momentum == pytest.approx(0.95)
    assert model.get_layer("up1").layers[1].momentum == pytest.approx(0.95)  # the decoder's too
    settings = json.loads((run / "metrics.json").read_text())["settings"]
    assert settings["decoder_filters"] == [16, 8, 8, 4] and settings["fuse_filters"] == [0, 12, 0, 0]
    assert settings["skips"] == "outputs" and settings["stem_stride"] == "auto"


def test_mobilenet_unet_architecture_defaults_and_refusals(capsys, tmp_path):
    defaults = train_mobilenet_unet.build_parser().parse_args([])
    assert defaults.decoder_filters == (384, 192, 96, 48) and defaults.fuse_filters == (0, 96, 48, 0)
    assert defaults.skips == "expansions" and defaults.stem_stride == "auto"
    # auto: unstrided up to 128 px, where the encoder then sees the photo at up to 256 px
    parsed = [train_mobilenet_unet.build_parser().parse_args(argv) for argv in (
        [], ["--image-size", "64"], ["--image-size", "160"], ["--image-size", "192", "--crop", "128"],
        ["--image-size", "192", "--stem-stride", "1"], ["--stem-stride", "2"])]
    parsed.append(train_mobilenet_unet.build_parser().parse_args(["--image-size", "192", "--stem-stride", "2,1"]))
    # (the frozen epochs' stride, the fine-tuning ones'): auto unstrides the fine-tuning up to 128 px
    assert [train_mobilenet_unet.stem_strides(args.stem_stride, args.image_size) for args in parsed] == [
        (2, 1), (2, 1), (2, 2), (2, 2), (1, 1), (2, 2), (2, 1)]
    # from random weights there is no pretrained scale to match: auto keeps stride 2, explicit values stay
    assert [train_mobilenet_unet.stem_strides(args.stem_stride, args.image_size, pretrained=False)
            for args in parsed] == [(2, 2), (2, 2), (2, 2), (2, 2), (1, 1), (2, 2), (2, 1)]
    # the default model that benchmarks and tests build: the fine-tuning epochs' (which a run saves) or the frozen ones'
    assert [train_mobilenet_unet.architecture(size, fine_tuning)["stem_stride"]
            for size, fine_tuning in ((128, True), (128, False), (192, True))] == [1, 2, 2]
    for option, value, message in (
            ("--stem-stride", "4", "argument --stem-stride: invalid choice: '4' (choose from 'auto', '1', '2', '2,1')"),
            ("--skips", "inputs", "argument --skips: invalid choice: 'inputs' (choose from 'expansions', 'outputs')"),
            ("--decoder-filters", "16,8", "argument --decoder-filters: '16,8': give 4 widths, one per block"),
            ("--fuse-filters", "0,0,-48,0", "argument --fuse-filters: '0,0,-48,0': widths must be 0 or more")):
        with pytest.raises(SystemExit) as exited:  # argparse's own refusal
            train_mobilenet_unet.main(QUICK + [option, value, "--output", str(tmp_path / "r")])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_run_stopped_in_each_phase_resumes_into_the_stride_switch_and_continues_both_learning_rates(
        tmp_path, monkeypatch, random_mobilenet_weights, capsys):
    """--stem-stride 2,1: the frozen epochs at stride 2, then the model rebuilt unstrided with its weights.

    Stopped after the frozen epoch, the run resumes into the switch; the 32-px windows (--crop) must
    still fit the rebuilt model. Stopped again after the first fine-tuning epoch and resumed, the
    encoder's and the decoder's optimizers keep counting their steps (2 an epoch) on their own
    schedules, not restarted. The final figures must be the saved model's, not those of a
    predictor traced before the switch. (One run for both stops: most of a MobileNetV2 run's
    time in a test is tracing.)
    """
    run = tmp_path / "run"
    original = interrupt_after_each_epoch(monkeypatch)
    argv = QUICK + ["--encoder-weights", str(random_mobilenet_weights), "--stem-stride", "2,1", "--crop", "32",
                    "--epochs", "1", "--fine-tune-epochs", "2", "--decoder-filters", "32,16,16,8", "--output", str(run)]
    fine_tuning = ("the encoder from block_6_expand fine-tuned (first convolution stride 1; BatchNorm frozen); "
                   "peak learning rates 0.0003 for the encoder, 0.001 for the decoder\n")
    assert train_mobilenet_unet.main(argv) == 130  # after the frozen epoch
    out = capsys.readouterr().out
    assert "\nepoch 1: the encoder frozen (first convolution stride 2); peak learning rate 0.001\n" in out
    assert "fine-tuned" not in out
    frozen = saved_model(run / "last.keras")
    assert stem_stride_of(frozen) == 2 and not frozen.get_layer("encoder").trainable

    assert train_mobilenet_unet.main(["--resume", str(run)]) == 130  # after the first fine-tuning epoch
    out = capsys.readouterr().out
    assert f"\nepochs 2 to 3: {fine_tuning}" in out and "frozen (first" not in out
    midway = saved_model(run / "last.keras")
    assert stem_stride_of(midway) == 1
    assert [int(inner.iterations.numpy()) for inner in midway.optimizer.optimizers] == [2, 2]

    monkeypatch.setattr(rundir.RunRecorder, "on_epoch_end", original)
    assert train_mobilenet_unet.main(["--resume", str(run)]) == 0
    assert f"\nepochs 2 to 3 (resumed after epoch 2): {fine_tuning}" in capsys.readouterr().out
    metrics = check_run_folder(run, epochs=3)
    last = saved_model(run / "last.keras")
    encoder = last.get_layer("encoder")
    assert stem_stride_of(last) == 1 and encoder.get_layer("Conv1").output.shape[1:3] == (64, 64)
    assert encoder.get_layer("block_6_expand").trainable and not encoder.get_layer("block_5_expand").trainable
    assert last.count_params() == frozen.count_params()
    assert metrics["settings"]["stem_stride"] == "2,1"
    assert type(last.optimizer) is keras.optimizers.MultiOptimizer
    schedules = sorted((schedule_config(inner)["warmup_target"], int(inner.iterations.numpy()))
                       for inner in last.optimizer.optimizers)
    assert schedules == [(pytest.approx(3e-4), 4), (pytest.approx(1e-3), 4)]
    assert metrics["test"]["mean_iou"] == pytest.approx(fresh_figures(last)["model_size"]["mean_iou"], abs=1e-6)


def test_each_phase_says_what_it_trains():
    def titles(*argv):
        return [phase.title for phase in train_mobilenet_unet.build_phases(train_mobilenet_unet.build_parser().parse_args(argv))]

    assert titles() == [
        "the encoder frozen (first convolution stride 2); peak learning rate 0.001",
        "the encoder from block_6_expand fine-tuned (first convolution stride 1; BatchNorm frozen); "
        "peak learning rates 0.0003 for the encoder, 0.001 for the decoder"]
    assert titles("--fine-tune-from", "all", "--fine-tune-decoder-learning-rate", "same", "--image-size", "160") == [
        "the encoder frozen (first convolution stride 2); peak learning rate 0.001",
        "the whole encoder fine-tuned (first convolution stride 2; BatchNorm frozen); peak learning rate 0.0003"]
    assert titles("--encoder-weights", "none", "--learning-rate", "2e-3") == [
        "the whole model from random weights (first convolution stride 2); peak learning rate 0.002",
        "the whole model, at the fine-tuning rates (first convolution stride 2); "
        "peak learning rates 0.0003 for the encoder, 0.001 for the decoder"]
    assert titles("--fine-tune-epochs", "0") == ["the encoder frozen (first convolution stride 2); peak learning rate 0.001"]
    assert training.phase_heading(10, training.Phase(20, 1e-3, title="T")) == "epochs 11 to 20: T"
    assert training.phase_heading(10, training.Phase(11, 1e-3, title="T")) == "epoch 11: T"
    assert training.phase_heading(10, training.Phase(20, 1e-3, title="T"), resumed_after=14) == \
        "epochs 11 to 20 (resumed after epoch 14): T"


def test_stride_2_then_1_starts_from_the_imagenet_checkpoint_stride_1_would(monkeypatch):
    """Keras picks MobileNetV2's checkpoint by the size the encoder works at: '2,1' (and 'auto' at 64 px)
    must start from the one stride 1 gets (twice --image-size; the one its fine-tuned encoder works at),
    then train its frozen epochs at stride 2 (a copy built without weights, carrying the loaded ones).
    Frozen throughout, 'auto' is stride 2 and its checkpoint."""
    requested, real = [], keras.applications.MobileNetV2

    def offline(input_shape, include_top, weights):
        requested.append((input_shape[0], weights))
        return real(input_shape=input_shape, include_top=include_top, weights=None)

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    strides = []
    for value, fine_tuning in (("1", "10"), ("2,1", "10"), ("auto", "10"), ("2", "10"), ("auto", "0")):
        args = train_mobilenet_unet.build_parser().parse_args(["--image-size", "64", "--stem-stride", value,
                                                               "--fine-tune-epochs", fine_tuning,
                                                               "--decoder-filters", "32,16,16,8"])
        strides.append(stem_stride_of(train_mobilenet_unet.build_model(args, (64, 64, 3), 3)))
    assert strides == [1, 2, 2, 2, 2]
    assert requested == [(128, "imagenet"), (128, "imagenet"), (64, None), (128, "imagenet"), (64, None),
                         (64, "imagenet"), (64, "imagenet")]


def test_stride_2_then_1_needs_fine_tuning_epochs(tmp_path, capsys):
    argv = QUICK + ["--stem-stride", "2,1", "--fine-tune-epochs", "0", "--output", str(tmp_path / "r")]
    status, err = run_script(train_mobilenet_unet, argv, capsys)
    assert status == 2 and ("--stem-stride 2,1 switches to stride 1 when fine-tuning starts: it needs "
                            "--fine-tune-epochs above 0 (for stride 2 throughout, give --stem-stride 2)") in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--fine-tune-epochs", "-1", "error: --fine-tune-epochs must be 0 or more, got -1\n"),
    ("--fine-tune-learning-rate", "0", "error: --fine-tune-learning-rate must be positive, got 0.0\n"),
])
def test_fine_tuning_numbers_are_refused_by_name(tmp_path, capsys, option, value, message):
    status, err = run_script(train_mobilenet_unet, QUICK + [option, value, "--output", str(tmp_path / "r")], capsys)
    assert status == 2 and err.endswith(message)


def test_a_weights_file_that_is_not_mobilenet_v2_is_named_by_its_option(tmp_path, capsys):
    (tmp_path / "weights.h5").write_text("not HDF5")
    argv = QUICK + ["--encoder-weights", str(tmp_path / "weights.h5"), "--output", str(tmp_path / "r")]
    status, err = run_script(train_mobilenet_unet, argv, capsys)
    assert status == 2 and (f"error: --encoder-weights {tmp_path / 'weights.h5'}: {tmp_path / 'weights.h5'} holds no "
                            "weights of Keras' MobileNetV2 without its top") in err
    assert not (tmp_path / "r").exists()


def test_unknown_fine_tune_layer_is_refused_before_training(tmp_path, capsys):
    argv = QUICK + ["--encoder-weights", "none", "--fine-tune-from", "block_99", "--output", str(tmp_path / "r")]
    status, err = run_script(train_mobilenet_unet, argv, capsys)
    assert status == 2 and "--fine-tune-from block_99: the encoder has no layer 'block_99'" in err
    assert not (tmp_path / "r").exists()


def majority_class_mean_iou(source, options) -> float:
    """Mean IoU of predicting the training split's most frequent class everywhere, at own size."""
    train = np.concatenate([m.numpy().ravel() for _, m in data.load_examples(source, "train", options)])
    majority = np.bincount(train, minlength=3).argmax()
    _, photos = data.photos(source, "test", options)
    test = np.concatenate([photo.mask.ravel() for photo in photos])
    return float(np.mean([np.mean(test == c) if c == majority else 0.0 for c in range(3)]))


@pytest.mark.slow
def test_frozen_pretrained_encoder_learns_the_real_sample(oxford_sample, mobilenet_weights, tmp_path):
    """The real ImageNet encoder, frozen, and 40 steps at 64 px: well beyond the majority class.

    Measured (seed 0): 0.506 mean IoU at each photo's own size (seed 2: 0.505; with MobileNetV2's
    strided first convolution, --stem-stride 2, 0.466 and 0.447); the majority class scores 0.21.
    """
    run = tmp_path / "run"
    argv = ["--data", oxford_sample, "--encoder-weights", mobilenet_weights, "--image-size", "64",
            "--batch-size", "4", "--epochs", "8", "--fine-tune-epochs", "0", "--seed", "0", "--output", run]
    assert train_mobilenet_unet.main([str(word) for word in argv]) == 0
    score = json.loads((run / "metrics.json").read_text())["test"]["original_size"]["mean_iou"]
    baseline = majority_class_mean_iou(oxford_sample, data.DataOptions(image_size=64))
    assert 0.15 < baseline < 0.3
    assert score > baseline + 0.1
    encoder = saved_model(run / "last.keras").get_layer("encoder")
    assert not encoder.trainable  # frozen throughout: the decoder alone learned this
    assert encoder.get_layer("Conv1").strides == (2, 2)  # --stem-stride auto: the frozen epochs' stride


def test_training_leaves_out_the_ignored_border(oxford_sample, tmp_path):
    run = tmp_path / "run"
    argv = ["--data", str(oxford_sample), "--image-size", "64", "--batch-size", "6", "--epochs", "1",
            "--repeat", "1", "--num-classes", "2", "--ignore-class", "3", "--output", str(run)] + SMALL_UNET
    assert train_unet.main(argv) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]["iou_per_class"]) == {"pet", "background"}
    original = metrics["test"]["original_size"]
    _, photos = data.photos(oxford_sample, "test", data.DataOptions(image_size=64))
    masks = [photo.mask for photo in photos]
    assert original["pixels"] == sum(int((mask != 2).sum()) for mask in masks)  # border (trimap 3) not counted
    config = json.loads((run / "config.json").read_text())
    assert (config["num_classes"], config["ignore_class"]) == (2, 3)
    assert saved_model(run / "last.keras").output_shape[-1] == 2


@pytest.mark.slow
def test_a_default_run_loads_in_plain_keras(tmp_path):
    """A user's own script can load the model without importing this project (Keras' own loss)."""
    run = tmp_path / "run"
    assert train_unet.main(QUICK + SMALL_UNET + ["--epochs", "1", "--loss", "sce", "--output", str(run)]) == 0
    code = ("import keras, numpy as np\n"
            f"model = keras.models.load_model({str(run / 'best.keras')!r})\n"
            "print(model.predict(np.zeros((1, 64, 64, 3)), verbose=0).shape)\n")
    result = run_subprocess(["-c", code], env={**__import__("os").environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 64, 64, 3)" in result.stdout
