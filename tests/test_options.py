"""options.py: grouped options, checks, and --resume re-parsed through the same parser."""

import argparse
import json

import pytest

import options
import train_mobilenet_unet
import train_unet
from conftest import run_main
from errors import UserError


def saved_run(folder, script="train_unet", completed=1, **settings):
    """A run folder as training leaves it after `completed` epochs, with config.json from a real parse."""
    parser = train_unet.build_parser() if script == "train_unet" else train_mobilenet_unet.build_parser()
    args = parser.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in settings.items()])
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(vars(args)))
    (folder / "state.json").write_text(json.dumps({"completed_epochs": completed}))
    (folder / "last.keras").write_bytes(b"")
    return folder


def test_help_groups_the_options():
    text = train_mobilenet_unet.build_parser().format_help()
    for title in options.GROUPS:
        assert f"\n{title}:\n" in text
    model_part = text.split("\nmodel:\n")[1].split("\noptimization:\n")[0]
    assert "--encoder-weights" in model_part and "--fine-tune-epochs" not in model_part
    assert "--fine-tune-epochs" in text.split("\noptimization:\n")[1].split("\ndevices:\n")[0]
    assert "--filters" in train_unet.build_parser().format_help().split("\nmodel:\n")[1].split("\noptimization:\n")[0]


def test_help_shows_each_default_once():
    for parser in (train_unet.build_parser(), train_mobilenet_unet.build_parser()):
        text = " ".join(parser.format_help().split())
        assert "(default: None)" not in text and "(default: False)" not in text
        assert "side of the square the images are resized to (default: 128)" in text
        assert "run folder to create (default: runs/<script>-<timestamp>) --show" in text  # not followed by None
        assert "0 otherwise) --holdout-fraction" in text
        assert "per-pixel sample-weight map (default: every class alike)" in text


def test_resume_reparses_saved_settings_with_their_types(tmp_path):
    run = saved_run(tmp_path / "run", filters="4,8,8,8,8,8", epochs=3, augment="flip,color", seed=5)
    args = options.parse_args(train_unet.build_parser(), ["--resume", str(run)])
    assert args.filters == (4, 8, 8, 8, 8, 8) and args.epochs == 3 and args.seed == 5
    assert args.augment == ("flip", "color") and args.output == str(run) and args.resume == str(run)


def test_resume_keeps_the_passes_of_the_run(tmp_path):
    run = saved_run(tmp_path / "run")
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run)]).repeat == "auto"
    config = json.loads((run / "config.json").read_text())
    del config["repeat"]  # a run from before --repeat: one pass an epoch, not auto's
    (run / "config.json").write_text(json.dumps(config))
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run)]).repeat == 1


def test_resume_of_a_run_saved_before_the_decoder_options_keeps_its_decoder(tmp_path):
    run = saved_run(tmp_path / "run", script="train_mobilenet_unet", skips="outputs")
    parser = train_mobilenet_unet.build_parser()
    resumed = options.parse_args(parser, ["--resume", str(run)])
    assert resumed.decoder_filters == (384, 192, 96, 48) and resumed.fuse_filters == (0, 96, 48, 0)
    assert resumed.skips == "outputs" and resumed.stem_stride == "auto"
    config = json.loads((run / "config.json").read_text())
    del config["decoder_filters"], config["fuse_filters"], config["skips"], config["stem_stride"]  # saved before them
    (run / "config.json").write_text(json.dumps(config))
    resumed = options.parse_args(parser, ["--resume", str(run)])
    assert resumed.decoder_filters == (512, 256, 128, 64) and resumed.fuse_filters == (0, 0, 0, 0)
    assert resumed.skips == "expansions" and resumed.stem_stride == "2"


def test_the_decoder_fine_tuning_rate_takes_a_rate_or_same(capsys):
    parser = train_mobilenet_unet.build_parser()
    same = parser.parse_args(["--fine-tune-decoder-learning-rate", "same", "--fine-tune-learning-rate", "2e-4"])
    assert train_mobilenet_unet.fine_tuning_rates(same) == (2e-4, 2e-4)
    assert train_mobilenet_unet.fine_tuning_rates(parser.parse_args(["--fine-tune-decoder-learning-rate", "5e-4"])) == (
        5e-4, 3e-4)
    for bad in ("0", "-1e-3", "fast"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([f"--fine-tune-decoder-learning-rate={bad}"])
        assert exit_info.value.code == 2
        assert f"argument --fine-tune-decoder-learning-rate: {bad!r}: give a positive learning rate or 'same'" in (
            capsys.readouterr().err)


def test_resume_of_a_run_saved_before_the_decoder_fine_tuning_rate_trains_the_whole_model_alike(tmp_path):
    run = saved_run(tmp_path / "run", script="train_mobilenet_unet", fine_tune_decoder_learning_rate=2e-3)
    parser = train_mobilenet_unet.build_parser()
    assert options.parse_args(parser, ["--resume", str(run)]).fine_tune_decoder_learning_rate == 2e-3
    config = json.loads((run / "config.json").read_text())
    del config["fine_tune_decoder_learning_rate"]  # saved before the option: one rate for the whole model
    (run / "config.json").write_text(json.dumps(config))
    resumed = options.parse_args(parser, ["--resume", str(run)])
    assert train_mobilenet_unet.fine_tuning_rates(resumed) == (3e-4, 3e-4)


def test_resume_of_a_run_saved_before_the_outline_weight_weighs_every_pixel_alike(tmp_path):
    run = saved_run(tmp_path / "run", outline_weight=2.0)
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run)]).outline_weight == 2.0
    config = json.loads((run / "config.json").read_text())
    del config["outline_weight"]
    (run / "config.json").write_text(json.dumps(config))
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run)]).outline_weight == 1.0


def test_mixed_precision_takes_a_type_and_defaults_to_float16(capsys):
    parser = train_unet.build_parser()
    assert options.parse_args(parser, []).mixed_precision is None
    assert options.parse_args(parser, ["--mixed-precision"]).mixed_precision == "float16"
    assert options.parse_args(parser, ["--mixed-precision", "--epochs", "2"]).mixed_precision == "float16"
    assert options.parse_args(parser, ["--mixed-precision", "bfloat16"]).mixed_precision == "bfloat16"
    with pytest.raises(SystemExit) as exit_info:
        options.parse_args(parser, ["--mixed-precision", "float8"])
    assert exit_info.value.code == 2
    assert "--mixed-precision: invalid choice: 'float8'" in capsys.readouterr().err


@pytest.mark.parametrize("saved, resumed", [(True, "float16"), (False, None), ("bfloat16", "bfloat16"), (None, None)])
def test_resume_reads_the_mixed_precision_switch_of_older_runs(tmp_path, saved, resumed):
    run = saved_run(tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["mixed_precision"] = saved  # runs saved before it took a type stored true or false
    (run / "config.json").write_text(json.dumps(config))
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run)]).mixed_precision == resumed


def test_resume_keeps_an_empty_augmentation_list(tmp_path):
    run = saved_run(tmp_path / "run", augment="none")
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run)]).augment == ()


def test_resume_takes_a_higher_epoch_count(tmp_path):
    run = saved_run(tmp_path / "run", epochs=3)
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run), "--epochs", "7"]).epochs == 7
    mobilenet = saved_run(tmp_path / "m", script="train_mobilenet_unet", epochs=3, fine_tune_epochs=2)
    args = options.parse_args(train_mobilenet_unet.build_parser(), ["--resume", str(mobilenet), "--fine-tune-epochs", "4"])
    assert (args.epochs, args.fine_tune_epochs) == (3, 4)


def test_resume_raises_the_frozen_epochs_only_before_the_fine_tuning(tmp_path):
    parser = train_mobilenet_unet.build_parser()
    frozen_done = saved_run(tmp_path / "a", script="train_mobilenet_unet", completed=3, epochs=3, fine_tune_epochs=2)
    assert options.parse_args(parser, ["--resume", str(frozen_done), "--epochs", "5"]).epochs == 5
    fine_tuned = saved_run(tmp_path / "b", script="train_mobilenet_unet", completed=4, epochs=3, fine_tune_epochs=2)
    with pytest.raises(UserError) as refused:
        options.parse_args(parser, ["--resume", str(fine_tuned), "--epochs", "5"])
    assert str(refused.value) == (f"--epochs 5: the run in {fine_tuned} finished its 3 epochs on the frozen encoder "
                                  "and has fine-tuned for 1; only --fine-tune-epochs can be raised now")
    both = options.parse_args(parser, ["--resume", str(fine_tuned), "--epochs", "3", "--fine-tune-epochs", "6"])
    assert (both.epochs, both.fine_tune_epochs) == (3, 6)
    unet = saved_run(tmp_path / "c", completed=4, epochs=4)  # one phase: it simply goes on
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(unet), "--epochs", "6"]).epochs == 6


def test_resume_keeps_the_plan_of_an_earlier_resume(tmp_path):
    run = saved_run(tmp_path / "run", completed=5, epochs=4)
    state = {"completed_epochs": 5, "planned": {"epochs": 8}}  # stopped while resumed with --epochs 8
    (run / "state.json").write_text(json.dumps(state))
    assert options.parse_args(train_unet.build_parser(), ["--resume", str(run)]).epochs == 8
    with pytest.raises(UserError, match="--epochs 6 is below the 8 planned for the run in"):
        options.parse_args(train_unet.build_parser(), ["--resume", str(run), "--epochs", "6"])


def test_resume_refuses_a_lower_epoch_count(tmp_path):
    run = saved_run(tmp_path / "run", epochs=5)
    with pytest.raises(UserError, match="--epochs 4 is below the 5 planned for the run in .*; it can only be raised"):
        options.parse_args(train_unet.build_parser(), ["--resume", str(run), "--epochs", "4"])


@pytest.mark.parametrize("extra, named", [
    (["--learning-rate", "0.1"], "--learning-rate"),
    (["--learning-r=0.1"], "--learning-rate"),  # an abbreviation is still that option
    (["--batch-size", "2", "--seed", "3"], "--batch-size, --seed"),
    (["--mixed-precision"], "--mixed-precision"),
])
def test_resume_refuses_other_options_by_name(tmp_path, capsys, extra, named):
    run = saved_run(tmp_path / "run")
    status, _, err = run_main(train_unet.main, ["--resume", run, *extra], capsys)
    assert status == 2
    assert f"beside it only --epochs may be given, not {named}" in err


def test_resume_of_a_run_made_by_the_other_script(tmp_path):
    run = saved_run(tmp_path / "run", script="train_mobilenet_unet")
    with pytest.raises(UserError, match="that run was made by train_mobilenet_unet.py, not train_unet.py"):
        options.parse_args(train_unet.build_parser(), ["--resume", str(run)])


def test_given_options_sees_only_what_was_typed():
    parser = train_unet.build_parser()
    assert options.given_options(parser, ["--epochs", "3", "--image-s=64"]) == {"epochs", "image_size"}
    assert options.given_options(parser, []) == set()


@pytest.mark.parametrize("option, value, message", [
    ("--weight-decay", "-1", "--weight-decay must be 0 or more, got -1.0"),
    ("--warmup-epochs", "-0.5", "--warmup-epochs must be 0 or more, got -0.5"),
    ("--bn-momentum", "1", "--bn-momentum must be in [0, 1), got 1.0"),
    ("--outline-weight", "0", "--outline-weight must be positive, got 0.0"),
    ("--holdout-fraction", "1.5", "--holdout-fraction must be between 0 and 1, got 1.5"),
    ("--num-classes", "0", "--num-classes must be at least 1, got 0"),
    ("--num-classes", "300", "--num-classes must be at most 255, got 300"),
    ("--ignore-class", "-1", "--ignore-class must be a mask value from 0 to 255, got -1"),
    ("--seed", "-3", "--seed must be from 0 to 2**32 - 1, got -3"),
])
def test_recipe_numbers_are_checked(option, value, message):
    with pytest.raises(UserError) as refused:
        options.parse_args(train_unet.build_parser(), [option, value])
    assert str(refused.value) == message


def test_unknown_augmentation_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        train_unet.build_parser().parse_args(["--augment", "flip,rotate"])
    assert "'flip,rotate': use 'none' or a comma-separated list of flip, scale, color" in capsys.readouterr().err


def test_each_script_defaults_to_its_measured_recipe():
    """The recipes of BENCHMARKS.md section 1: changing one is a decision, not an accident."""
    mobilenet = train_mobilenet_unet.build_parser().parse_args([])
    unet = train_unet.build_parser().parse_args([])
    shared = dict(optimizer="adamw", weight_decay=1e-4, schedule="cosine", warmup_epochs=1.0, learning_rate=1e-3,
                  bn_momentum=0.9, outline_weight=3.0, image_size=128, cache="memory")
    for args in (mobilenet, unet):
        assert {key: getattr(args, key) for key in shared} == shared
    assert (mobilenet.epochs, mobilenet.fine_tune_epochs, mobilenet.fine_tune_learning_rate) == (10, 10, 3e-4)
    assert mobilenet.fine_tune_decoder_learning_rate == 1e-3
    assert train_mobilenet_unet.fine_tuning_rates(mobilenet) == (1e-3, 3e-4)  # decoder, encoder
    assert mobilenet.fine_tune_from == "block_6_expand"
    assert (mobilenet.batch_size, mobilenet.loss, mobilenet.augment) == (16, "sce", ("flip", "scale", "color"))
    assert (unet.epochs, unet.batch_size, unet.loss, unet.augment) == (20, 8, "sce+dice", ("flip", "scale", "color"))
    help_text = " ".join(train_mobilenet_unet.build_parser().format_help().split())
    assert "--epochs EPOCHS epochs on the frozen encoder, before the fine-tuning ones" in help_text


@pytest.mark.parametrize("choice, train, test, scored", [
    ("auto", 240, 60, 60),  # a small test split: every example
    ("auto", 300, 300, 75),  # a quarter of the training examples
    ("auto", 40, 300, 64),  # at least 64
    ("auto", 3680, 3669, 920),  # Oxford-IIIT Pet through TFDS
    ("all", 3680, 3669, 3669),
    (10, 240, 60, 10),
    (100, 240, 60, 60),
])
def test_validation_count(choice, train, test, scored):
    assert options.validation_count(choice, train, test) == scored


@pytest.mark.parametrize("option, given, parsed, bad, advice", [
    ("--val-examples", ("auto", "ALL", "12"), ["auto", "all", 12], ("0", "some"),
     "use 'auto', 'all' or a number of examples of at least 1"),
    ("--repeat", ("auto", "AUTO", "3"), ["auto", "auto", 3], ("0", "twice"), "use 'auto' or a number of passes of at least 1"),
])
def test_word_or_count_options_parse(capsys, option, given, parsed, bad, advice):
    parser = train_unet.build_parser()
    dest = option[2:].replace("-", "_")
    assert [getattr(parser.parse_args([option, text]), dest) for text in given] == parsed
    assert getattr(parser.parse_args([]), dest) == "auto"
    for text in bad:
        with pytest.raises(SystemExit):
            parser.parse_args([option, text])
        assert f"{text!r}: {advice}" in capsys.readouterr().err


@pytest.mark.parametrize("choice, train, batch, passes", [
    ("auto", 240, 8, 2),  # 30 steps a pass: two make 60
    ("auto", 400, 8, 1),  # 50 steps already
    ("auto", 3680, 8, 1),  # Oxford-IIIT Pet through TFDS
    ("auto", 20, 6, 13),  # 4 steps a pass
    (3, 240, 8, 3),
    (1, 20, 6, 1),
])
def test_training_passes(choice, train, batch, passes):
    assert options.training_passes(choice, train, batch) == passes


def test_the_mobilenet_unet_makes_one_pass_an_epoch():
    assert train_mobilenet_unet.build_parser().parse_args([]).repeat == 1  # the pretrained encoder


def test_widths_are_positive_whole_numbers_and_counted_when_asked():
    assert options.widths()("16,32, 64") == (16, 32, 64)
    assert options.widths(4)("256,128,64,32") == (256, 128, 64, 32)
    for text, message in (("16,x", "is not a comma-separated list of whole numbers"), ("8,0", "widths must be positive"),
                          ("", "is not a comma-separated list")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            options.widths()(text)
    with pytest.raises(argparse.ArgumentTypeError, match="give 4 widths, one per block"):
        options.widths(4)("256,128")


def test_widths_may_include_zero_when_a_block_can_be_left_out():
    assert options.widths(4, minimum=0)("0,0,48,0") == (0, 0, 48, 0)
    with pytest.raises(argparse.ArgumentTypeError, match="'0,-1,48,0': widths must be 0 or more"):
        options.widths(4, minimum=0)("0,-1,48,0")
