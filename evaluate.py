"""Judge a trained model on any data: accuracy, mean IoU, IoU and Dice per class, confusion matrix.

Example: python evaluate.py --model runs/RUN/best.keras --data ~/pets --split test

Every figure comes twice: at the model's input size (masks resized with nearest neighbour,
as in training) and at each photo's own size (the logits resized back as predict.py does,
compared with the untouched mask): the second is what a user of predict.py gets. Pixel
counts are exact integers. The output folder gets metrics.json, confusion_matrix.csv (pixel
counts at each photo's own size, rows = true class), confusion_matrix.png (each row as
shares) and worst.png (the images with the lowest mean IoU: input, truth, prediction).
Exit status: 0 on success, 2 for a problem that stops the run (nothing is written then).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from errors import interrupt_quietly_while_starting  # noqa: E402  (light: no TensorFlow)

if __name__ == "__main__":  # run as a script, not imported by the tests
    interrupt_quietly_while_starting()

import data  # noqa: E402
import evaluation  # noqa: E402
import visualize  # noqa: E402
from errors import UserError, run_cli, user_errors  # noqa: E402
from files import write_json, write_text  # noqa: E402
from options import (add_label_options, add_size_option, add_tta_option, check_at_least_one,  # noqa: E402
                     load_model_option, option_value_errors)
from rundir import RunDir  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", required=True, help="a trained model: .keras, or a .tflite file or SavedModel folder made by export.py")
    add("--data", default=data.TFDS_NAME, help=(
        "what --data takes in training: 'oxford_iiit_pet', 'synthetic', or a folder (Oxford-IIIT Pet "
        "archives, Pascal VOC, your own images/ + masks/) (default: oxford_iiit_pet)"))
    add("--split", choices=data.SPLITS, default="test", help="which split to judge (default: test)")
    add("--output", default=None, help="folder to create for the results (default: runs/evaluate-<timestamp>)")
    add("--worst", type=int, default=8, help="images with the lowest mean IoU drawn in worst.png; 0: none (default: 8)")
    add("--batch-size", type=int, default=32, help="images predicted together (default: 32)")
    add_tta_option(add, "(default: flip, as predict.py)")
    add_size_option(add)
    add("--limit", type=int, default=None, help="judge only the first N images of the split (default: all)")
    add_label_options(add, own_classes="the model's")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_at_least_one(args, ("batch_size", "limit", "size", "num_classes"))  # 0 would read as "not given"
    if args.worst < 0:
        raise UserError(f"--worst must be 0 or more, got {args.worst}")
    output = RunDir.unused_path(args.output or None, "evaluate", resumable=False)
    predictor = load_model_option(args)
    options = data_options(args, predictor.num_classes, predictor.size)
    if predictor.num_classes != options.num_classes:
        if args.num_classes is not None:
            raise UserError(f"--model {args.model} predicts {predictor.num_classes} classes, not the "
                            f"--num-classes {args.num_classes} given")
        raise UserError(f"--model {args.model} predicts {predictor.num_classes} classes but --data {args.data} has "
                        f"{options.num_classes}; pass --num-classes if the data's count is not the default")
    names = data.class_names(args.data, options)
    with user_errors(f"--data {args.data}"):
        count, photos = data.photos(args.data, args.split, options)
        print(f"judging {args.model} on up to {count} images of the {args.split} split of {args.data}")
        result = evaluation.evaluate(predictor, photos, names, count=count, batch_size=args.batch_size,
                                     keep_worst=args.worst, show_progress=True)
    write_results(output, args, result)
    print_summary(result)
    print(f"results in {output}")
    return 0


def data_options(args: argparse.Namespace, model_classes: int, model_size: int) -> data.DataOptions:
    """The data read as in training, at the model's input size; class count and ignore value by source."""
    defaults = data.source_defaults(args.data)
    known_source = args.data in (data.TFDS_NAME, data.SYNTHETIC) or data.is_oxford(args.data) or data.is_voc(args.data)
    num_classes = args.num_classes or (defaults["num_classes"] if known_source else model_classes)
    ignore = args.ignore_class if args.ignore_class is not None else defaults["ignore_class"]
    with user_errors(), option_value_errors():
        options = data.DataOptions(image_size=model_size, limit=args.limit, num_classes=num_classes,
                                   mask_offset=args.mask_offset, holdout_fraction=args.holdout_fraction,
                                   ignore_class=ignore)
    with user_errors(f"--ignore-class {ignore}"):
        options.labels(oxford=data.is_oxford(args.data))
    return options


def write_results(output: Path, args: argparse.Namespace, result: evaluation.Evaluation) -> None:
    output.mkdir(parents=True, exist_ok=True)
    figures = result.figures()
    write_json(output / "metrics.json", {
        **figures,
        "confusion_matrix": {section: getattr(result, section).tolist() for section in evaluation.SECTIONS},
        "class_names": list(result.class_names),
        "model": str(args.model),
        "data": str(args.data),
        "split": args.split,
        "tta": args.tta,
        "size": args.size,
        "images": result.images,
    })
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["true \\ predicted", *result.class_names])
    for name, row in zip(result.class_names, result.original_size):
        writer.writerow([name, *map(int, row)])
    write_text(output / "confusion_matrix.csv", buffer.getvalue())
    visualize.save_confusion_matrix(output / "confusion_matrix.png", result.original_size, result.class_names,
                                    f"{Path(args.model).name} on {args.split}: shares of each true class")
    if result.worst:
        visualize.save_prediction_panel(
            output / "worst.png", [f.image for f in result.worst], [f.truth for f in result.worst],
            [f.predicted for f in result.worst], f"the {len(result.worst)} images with the lowest mean IoU",
            row_titles=[f"{f.name}: mean IoU {f.mean_iou:.3f}" for f in result.worst])


def print_summary(result: evaluation.Evaluation) -> None:
    figures = result.figures()
    print(f"\n{result.images} images:")
    for section, where in zip(evaluation.SECTIONS, ("at the model's input size:", "at each photo's own size:")):
        scores = figures[section]
        print(f"  {where:<27} pixel accuracy {scores['accuracy']:.4f}, mean IoU {scores['mean_iou']:.4f}")
    width = max(len(name) for name in result.class_names)
    print(f"  {'class':<{width}}  IoU (model / own size)  Dice (model / own size)")
    for name in result.class_names:
        cells = [figures[s][k][name] for k in ("iou_per_class", "dice_per_class") for s in evaluation.SECTIONS]
        text = ["  -  " if value is None else f"{value:.3f}" for value in cells]
        print(f"  {name:<{width}}  {text[0]} / {text[1]}           {text[2]} / {text[3]}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
