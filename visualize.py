"""Pictures a person looks at: training curves, prediction panels, mask overlays.

The palette is fixed so that a class has the same colour in every picture the project
makes; with Oxford-IIIT Pet classes it is pet = orange, background = blue, border = yellow.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and in CI
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from files import atomic_path  # noqa: E402

PALETTE = np.array(
    [
        [230, 126, 34],  # class 0: orange (Oxford-IIIT Pet: pet)
        [52, 152, 219],  # class 1: blue (background)
        [241, 196, 15],  # class 2: yellow (border)
        [46, 204, 113],  # class 3: green
        [155, 89, 182],  # class 4: purple
        [231, 76, 60],  # class 5: red
        [26, 188, 156],  # class 6: teal
        [149, 165, 166],  # class 7: grey
    ],
    dtype=np.uint8,
)


def colorize(mask: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 1) class-index mask as an (H, W, 3) uint8 RGB picture.

    Negative values (pixels that belong to no class, e.g. an ignore label) are drawn white.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    indices = mask.astype(np.int64)
    picture = PALETTE[indices % len(PALETTE)]
    picture[indices < 0] = 255
    return picture


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo with each pixel's class colour blended over it (uint8 RGB).

    In 16-bit integers with alpha in 256ths: four times faster than float32 on a photo, and
    within one grey level of it.
    """
    weight = int(round(alpha * 256))
    blended = (256 - weight) * image.astype(np.uint16) + weight * colorize(mask).astype(np.uint16) + 128
    return (blended >> 8).astype(np.uint8)


class TrainingCurves:
    """Loss, pixel accuracy and mean IoU per epoch, training against validation, redrawn each epoch.

    One figure serves the whole run: new values replace the lines' data, and only the PNG is
    drawn again (95 ms an epoch against 158 ms for a new figure, measured).
    """

    PANELS = (("loss", "Loss"), ("accuracy", "Pixel accuracy"), ("mean_iou", "Mean IoU"))
    SERIES = (("", "training"), ("val_", "validation"))

    def __init__(self, phase_starts: Sequence[tuple[int, str]] = ()):
        """`phase_starts`: (first epoch, label) of each phase after the first, such as fine-tuning,
        marked by a dashed line before that epoch once the curves reach it: they often jump there."""
        self.figure = Figure(figsize=(15, 4))
        self.axes = self.figure.subplots(1, 3)
        self.lines: dict[str, Line2D] = {}
        self.unmarked = sorted(phase_starts)
        for ax, (_, title) in zip(self.axes, self.PANELS):
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        self.figure.subplots_adjust(left=0.05, right=0.98, bottom=0.13, top=0.91, wspace=0.22)

    def save(self, path: str | os.PathLike, history: Sequence[Mapping[str, float]]) -> None:
        epochs = [row["epoch"] for row in history]
        reached = [start for start in self.unmarked if epochs and max(epochs) >= start[0]]
        self.unmarked = [start for start in self.unmarked if start not in reached]
        for ax, (key, _) in zip(self.axes, self.PANELS):
            for prefix, label in self.SERIES:  # a series gets its line once it has a value, as in a new figure
                values = [row.get(prefix + key, math.nan) for row in history]
                line = self.lines.get(prefix + key)
                if line is None and any(math.isfinite(v) for v in values):
                    line = self.lines[prefix + key] = ax.plot([], [], marker="o", label=label)[0]
                    ax.legend()
                if line is not None:
                    line.set_data(epochs, values)
            for epoch, label in reached:  # after the lines, as a new figure would draw them
                ax.axvline(epoch - 0.5, color="0.45", linestyle="--", linewidth=1)
                ax.text(epoch - 0.5, 0.02, f" {label}", transform=ax.get_xaxis_transform(), color="0.35",
                        fontsize=8, ha="left", va="bottom")
            ax.relim()
            ax.autoscale_view()
        _save(self.figure, path)


def save_curves(path: str | os.PathLike, history: Sequence[Mapping[str, float]],
                phase_starts: Sequence[tuple[int, str]] = ()) -> None:
    """Loss, pixel accuracy and mean IoU per epoch, training against validation."""
    TrainingCurves(phase_starts).save(path, history)


class PredictionPanel:
    """One row per example: input, true mask, predicted mask (pixels outside the classes drawn white).

    The inputs and true masks are drawn once; each `save` replaces the predicted masks and the
    title (a run draws the same validation images after every epoch: 101 ms against 206 ms
    for a new figure, measured).
    """

    def __init__(self, images: np.ndarray, true_masks: np.ndarray, row_titles: Sequence[str] | None = None):
        rows = len(images)
        self.figure = Figure(figsize=(9, 3 * rows))
        axes = self.figure.subplots(rows, 3, squeeze=False)
        self.predicted: list[AxesImage] = []
        for row in range(rows):
            pictures = [images[row], colorize(true_masks[row]), colorize(np.zeros_like(true_masks[row]))]
            for col, (picture, name) in enumerate(zip(pictures, ["Input", "True mask", "Predicted mask"])):
                shown = axes[row, col].imshow(picture)
                axes[row, col].axis("off")
                if row == 0:
                    axes[row, col].set_title(name)
            self.predicted.append(shown)
            if row_titles is not None:
                axes[row, 0].set_title(row_titles[row] if row else f"Input\n{row_titles[row]}", fontsize=9)
        self.title = self.figure.suptitle("")
        # A fixed layout: tight_layout measured 80 ms of the panel's 210.
        top = 1.0 - 0.75 / self.figure.get_figheight()
        self.figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.05,
                                    hspace=0.12 + 0.1 * (row_titles is not None))

    def save(self, path: str | os.PathLike, predicted_masks: np.ndarray, title: str) -> None:
        if len(predicted_masks) != len(self.predicted):
            raise ValueError(f"the panel has {len(self.predicted)} rows, got {len(predicted_masks)} masks")
        for shown, mask in zip(self.predicted, predicted_masks):
            shown.set_data(colorize(mask))
        self.title.set_text(title)
        _save(self.figure, path)


def save_prediction_panel(
    path: str | os.PathLike, images: np.ndarray, true_masks: np.ndarray, predicted_masks: np.ndarray, title: str,
    row_titles: Sequence[str] | None = None,
) -> None:
    """One row per example: input, true mask, predicted mask (pixels outside the classes drawn white)."""
    PredictionPanel(images, true_masks, row_titles).save(path, predicted_masks, title)


def save_confusion_matrix(path: str | os.PathLike, matrix: np.ndarray, class_names: Sequence[str], title: str) -> None:
    """Each true class's pixels by predicted class, as shares of the row (rows = truth)."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    side = max(4.0, 0.5 * len(class_names) + 2)
    figure = Figure(figsize=(side + 1, side))
    ax = figure.subplots()
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if len(class_names) <= 12:
        for (row, col), share in np.ndenumerate(shares):
            ax.text(col, row, f"{share:.2f}", ha="center", va="center", color="white" if share > 0.5 else "black")
    figure.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_title(title)
    figure.tight_layout()
    _save(figure, path)


def _save(figure: Figure, path: str | os.PathLike) -> None:
    """Writes the figure as a PNG. Figures here are made with matplotlib.figure.Figure, not
    pyplot, so none is held in pyplot's registry and nothing needs closing."""
    with atomic_path(path) as temporary:
        # zlib's fastest level: 36 ms less for an epoch's panel, files 9% larger.
        figure.savefig(temporary, format="png", dpi=80, pil_kwargs={"compress_level": 1})
