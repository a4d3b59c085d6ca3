"""Matplotlib figures: arrays in, figures out (saved atomically); no training logic."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # Headless: figures are written to files.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from aejax.files import write_bytes  # noqa: E402


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Writes `fig` to `path` atomically (no partial files; format from the suffix), then closes it."""
    path = Path(path)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_bytes(path, buffer.getvalue())


def linear_ae_codings(codings: np.ndarray) -> Figure:
    """The chapter's figure: the (n, 2) codings of the linear autoencoder, axes z1 / z2."""
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(codings[:, 0], codings[:, 1], "b.")
    ax.set_xlabel("$z_1$", fontsize=18)
    ax.set_ylabel("$z_2$", fontsize=18, rotation=0)
    ax.grid(True)
    return fig


def linear_ae_vs_pca(
    codings_in_pca_frame: np.ndarray, pca_scores: np.ndarray, loss_history: np.ndarray, pca_loss: float
) -> Figure:
    """AE codings mapped into the PCA frame over the PCA projection, and the loss vs the PCA optimum."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.scatter(pca_scores[:, 0], pca_scores[:, 1], s=60, facecolors="none", edgecolors="k", label="PCA projection")
    left.scatter(codings_in_pca_frame[:, 0], codings_in_pca_frame[:, 1], s=12, c="b", label="autoencoder (mapped)")
    left.set(xlabel="PC 1", ylabel="PC 2", title="Codings vs the PCA projection")
    left.legend(loc="best")
    left.grid(True)
    epochs = np.arange(1, len(loss_history) + 1)
    right.semilogy(epochs, loss_history, "b.-", label="training MSE")
    right.axhline(pca_loss, color="k", ls="--", label=f"PCA optimum {pca_loss:.5f}")
    right.set(xlabel="epoch", ylabel="MSE", title="Training loss")
    right.legend(loc="best")
    right.grid(True, which="both")
    return fig


def image_grid(
    images: np.ndarray, n_cols: int, *, titles: Sequence[str] | None = None, framed: Sequence[int] = ()
) -> Figure:
    """Images (N, 28, 28) in [0, 1] on a grid of `n_cols` columns; indices in `framed` get a red frame."""
    n_rows = (len(images) - 1) // n_cols + 1
    fig = plt.figure(figsize=(n_cols * 1.2, n_rows * 1.2 + (0.3 if titles else 0.0)))
    for index, image in enumerate(images):
        ax = fig.add_subplot(n_rows, n_cols, index + 1)
        ax.imshow(image, cmap="binary", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(index in framed)
            spine.set_color("red")
            spine.set_linewidth(2.5)
        if titles:
            ax.set_title(titles[index], fontsize=8)
    return fig


def reconstructions(originals: np.ndarray, reconstructed: np.ndarray) -> Figure:
    """Two rows: originals (N, 28, 28) above their reconstructions."""
    n = len(originals)
    fig = image_grid(np.concatenate([originals, reconstructed]), n)
    fig.suptitle("originals (top) and reconstructions (bottom)", fontsize=10)
    return fig


def learning_curves(history: dict[str, Sequence[float]], keys: Sequence[str], ylabel: str) -> Figure:
    """One line per history key against the epoch number."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in keys:
        values = history[key]
        ax.plot(np.arange(1, len(values) + 1), values, ".-", label=key)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(True)
    ax.legend(loc="best")
    return fig


def latent_scatter(points_2d: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Figure:
    """2-D view (N, 2) of latent means coloured by class, with a legend of class names."""
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for label, name in enumerate(class_names):
        mask = labels == label
        ax.scatter(points_2d[mask, 0], points_2d[mask, 1], s=2, color=cmap(label), label=name, alpha=0.6)
    ax.set(xlabel="PC 1 of latent means", ylabel="PC 2 of latent means")
    ax.legend(loc="best", markerscale=5, fontsize=8)
    return fig
