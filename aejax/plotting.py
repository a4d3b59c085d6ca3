"""Matplotlib figures: arrays in, figures out (saved atomically); no training logic.

Each function returns a `Figure` (a notebook shows it); `save_figure` writes it. The library leaves
matplotlib's backend alone; the experiment scripts pick the file-only "Agg".
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from aejax.io.files import write_bytes
from aejax.stats import summarize


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


@dataclasses.dataclass(frozen=True)
class LinearAERun:
    """One trained linear autoencoder for `linear_ae_vs_pca`."""

    label: str
    reconstructions_in_pca_frame: np.ndarray  # (n, 2): reconstructions projected on the top-2 PCs
    loss_history: np.ndarray  # (epochs,)
    max_principal_angle_rad: float
    loss_over_pca_optimum: float


def linear_ae_vs_pca(runs: Sequence[LinearAERun], pca_scores: np.ndarray, pca_loss: float) -> Figure:
    """One panel per run, its reconstructions over the PCA projection (with the largest principal
    angle and the MSE ratio printed on it), and the training losses against the PCA optimum."""
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(5 * (len(runs) + 1), 4.2))
    for ax, run in zip(axes, runs):
        ax.scatter(pca_scores[:, 0], pca_scores[:, 1], s=60, facecolors="none", edgecolors="k", label="PCA projection")
        ax.scatter(
            run.reconstructions_in_pca_frame[:, 0],
            run.reconstructions_in_pca_frame[:, 1],
            s=12,
            c="b",
            label="autoencoder (mapped)",
        )
        ax.set(xlabel="PC 1", ylabel="PC 2", title=run.label)
        ax.text(
            0.02,
            0.02,
            f"largest principal angle {run.max_principal_angle_rad:.2e} rad\n"
            f"MSE {run.loss_over_pca_optimum:.3f} x the PCA optimum",
            transform=ax.transAxes,
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
        )
        ax.legend(loc="best", fontsize=8)
        ax.grid(True)
    losses = axes[-1]
    for index, run in enumerate(runs):
        epochs = np.arange(1, len(run.loss_history) + 1)
        losses.loglog(epochs, run.loss_history, "-", color=f"C{index}", label=run.label.split(":")[0])
    losses.axhline(pca_loss, color="k", ls="--", label=f"PCA optimum {pca_loss:.5f}")
    losses.set(xlabel="epoch", ylabel="training MSE (epoch mean)", title="Training loss")
    losses.legend(loc="best", fontsize=8)
    losses.grid(True, which="both")
    return fig


def image_grid(
    images: np.ndarray, n_cols: int, *, titles: Sequence[str] | None = None, framed: Sequence[int] = ()
) -> Figure:
    """Images (N, H, W) (grey) or (N, H, W, C) (colour for C = 3 or 4) in [0, 1] on a grid of `n_cols` columns;
    indices in `framed` get a red frame."""
    n_rows = (len(images) - 1) // n_cols + 1
    fig = plt.figure(figsize=(n_cols * 1.2, n_rows * 1.2 + (0.3 if titles else 0.0)))
    for index, image in enumerate(images):
        ax = fig.add_subplot(n_rows, n_cols, index + 1)
        if image.ndim == 3 and image.shape[-1] in (3, 4):
            ax.imshow(np.clip(image, 0.0, 1.0))
        elif image.ndim == 3:  # other channel counts: their mean, in grey
            ax.imshow(image.mean(axis=-1), cmap="binary", vmin=0.0, vmax=1.0)
        else:
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


def panels(pictures: Sequence[np.ndarray], titles: Sequence[str], columns: int = 3, width: float = 4.0) -> Figure:
    """Pictures already drawn (H, W, 3 or 4), e.g. figures read back from PNG files, side by side:
    `columns` to a row, each `width` inches wide under its title, without axes."""
    columns = min(columns, len(pictures))
    rows = -(-len(pictures) // columns)
    aspect = max(picture.shape[0] / picture.shape[1] for picture in pictures)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, (width * aspect + 0.4) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, title in zip(axes.flat, pictures, titles):
        ax.imshow(picture)
        ax.set_title(title, fontsize=10)
    return fig


def reconstructions(originals: np.ndarray, reconstructed: np.ndarray) -> Figure:
    """Two rows: originals (N, H, W[, 3]) above their reconstructions."""
    n = len(originals)
    fig = image_grid(np.concatenate([originals, reconstructed]), n)
    fig.suptitle("originals (top) and reconstructions (bottom)", fontsize=10)
    return fig


def learning_curves(
    history: dict[str, Sequence[float] | np.ndarray], keys: Sequence[str], ylabel: str, fmt: str = ".-"
) -> Figure:
    """One curve per history key against the epoch.

    A key's values are one run's (epochs,) (drawn with `fmt`; NaN where an epoch is missing) or a
    population's (members, epochs) (NaN after a member stopped): a population is drawn as its mean
    with a 95% Student-t band, members as thin lines.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for index, key in enumerate(keys):
        values = np.atleast_2d(np.asarray(history[key], np.float64))
        epochs = np.arange(1, values.shape[1] + 1)
        color = f"C{index}"
        if len(values) == 1:
            ax.plot(epochs, values[0], fmt, color=color, label=key)
            continue
        for member in values:
            ax.plot(epochs, member, "-", color=color, lw=0.5, alpha=0.25)
        summaries = [summarize(column) for column in values.T]
        mean = np.asarray([np.nan if s["mean"] is None else s["mean"] for s in summaries])
        low = np.asarray([np.nan if s["ci95_low"] is None else s["ci95_low"] for s in summaries])
        high = np.asarray([np.nan if s["ci95_high"] is None else s["ci95_high"] for s in summaries])
        ax.plot(epochs, mean, "-", color=color, lw=2, label=f"{key}: mean of {len(values)}")
        ax.fill_between(epochs, low, high, color=color, alpha=0.3, label=f"{key}: 95% interval of the mean")
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(True)
    ax.legend(loc="best", fontsize=8)
    return fig


def rate_distortion(rates: Sequence[float], distortions: Sequence[float], betas: Sequence[float]) -> Figure:
    """Distortion (-log p(x|z), nats) against rate (KL, nats) for models trained with different beta.

    One point per model, coloured by beta, and the mean per beta joined in order of beta.
    """
    rates, distortions, betas = (np.asarray(v, np.float64) for v in (rates, distortions, betas))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    values = sorted(set(betas[np.isfinite(rates) & np.isfinite(distortions)]))
    cmap = plt.get_cmap("viridis", max(len(values), 2))
    means = []
    for index, beta in enumerate(values):
        pick = (betas == beta) & np.isfinite(rates) & np.isfinite(distortions)
        ax.scatter(rates[pick], distortions[pick], s=14, color=cmap(index), alpha=0.6, label=f"beta = {beta:g}")
        means.append((rates[pick].mean(), distortions[pick].mean()))
    if means:
        ax.plot(*np.asarray(means).T, "k-o", lw=1, ms=5, label="mean per beta")
        for beta, (rate, distortion) in zip(values, means):
            ax.annotate(f"β={beta:g}", (rate, distortion), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(
        xlabel="rate: KL(q(z|x) || p(z)) (nats)",
        ylabel="distortion: -log p(x|z) (nats)",
        title="rate–distortion over beta (test set)",
    )
    ax.grid(True)
    ax.legend(loc="best", fontsize=8)
    return fig


def ladder(
    names: Sequence[str],
    values: np.ndarray,
    published: Sequence[tuple[float, float | None] | None],
    xlabel: str,
    label: str = "aejax",
    published_label: str = "published (± over runs)",
) -> Figure:
    """One row per model (top to bottom as given): its value with an interval, `values` (n, 3) of
    (estimate, low, high), and beside it the published value, `published[i]` = (value, ± or None)
    or None where there is none; `label` and `published_label` name the two series."""
    values = np.asarray(values, np.float64)
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(names) + 1.3))
    rows = np.arange(len(names))[::-1]
    ax.errorbar(
        values[:, 0],
        rows,
        xerr=[values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]],
        fmt="o",
        color="C0",
        capsize=3,
        label=label,
    )
    shown = [(row, value) for row, value in zip(rows, published) if value is not None]
    if shown:
        ax.errorbar(
            [value[0] for _, value in shown],
            [row - 0.2 for row, _ in shown],
            xerr=[0.0 if value[1] is None else value[1] for _, value in shown],
            fmt="D",
            mfc="none",
            color="C3",
            capsize=3,
            label=published_label,
        )
    ax.set_yticks(rows, names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x")
    # Above the axes: inside, it would hide a row's marker whatever the values.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    return fig


def posterior_diagnostics(diagnostics: dict) -> Figure:
    """KL per latent dimension and Cov_x(E_q[z|x]) per dimension (log scale, with the active-unit
    threshold); the title gives active units, mutual information, rate and distortion.

    `diagnostics`: the dict `experiments.evaluate_vae` writes (kl_per_dim_nats, latent_activity, …).
    """
    kl = np.asarray(diagnostics["kl_per_dim_nats"])
    activity = np.asarray(diagnostics["latent_activity"])
    threshold = diagnostics["active_units_threshold"]
    dims = np.arange(len(kl))
    active = activity > threshold
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.bar(dims, kl, color=np.where(active, "C0", "0.7"))
    left.set(xlabel="latent dimension", ylabel="KL(q(z_l|x) || N(0,1)) (nats)", title="KL per dimension")
    right.bar(dims, activity, color=np.where(active, "C0", "0.7"))
    right.axhline(threshold, color="r", ls="--", label=f"active above {threshold:g}")
    right.set_yscale("log")
    right.set(xlabel="latent dimension", ylabel="Cov_x(E_q[z_l|x])", title="activity per dimension")
    right.legend(loc="best", fontsize=8)
    for ax in (left, right):
        ax.grid(True, axis="y", which="both", alpha=0.4)
    fig.suptitle(
        f"active units {diagnostics['active_units']}/{len(kl)}; I(x; z) = {diagnostics['mutual_information_nats']:.2f} "
        f"nats (max log N = {diagnostics['mutual_information_max_nats']:.2f}); rate {diagnostics['rate_nats']:.2f}, "
        f"distortion {diagnostics['distortion_nats']:.2f} nats",
        fontsize=9,
    )
    return fig


def latent_scatter(points_2d: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str] | None) -> Figure:
    """2-D view (N, 2) of latent means coloured by class (one colour without labels), with a legend of
    the class names (the label numbers when the data set names none)."""
    fig, ax = plt.subplots(figsize=(7, 6))
    if labels is None:
        ax.scatter(points_2d[:, 0], points_2d[:, 1], s=2, color="C0", alpha=0.6)
    else:
        cmap = plt.get_cmap("tab10" if labels.max(initial=0) < 10 else "tab20")
        for label in np.unique(labels):
            name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
            mask = labels == label
            ax.scatter(
                points_2d[mask, 0], points_2d[mask, 1], s=2, color=cmap(int(label) % cmap.N), label=name, alpha=0.6
            )
        ax.legend(loc="best", markerscale=5, fontsize=8)
    ax.set(xlabel="PC 1 of latent means", ylabel="PC 2 of latent means")
    return fig
