"""The VAE ladder's table and figures, from the runs `make ladder` writes.

    python -m experiments.ladder_report [--ladder runs/ladder --out runs/ladder/report]

Reads every training run in --ladder (a folder per rung, written by `experiments.vae_fashion_mnist`)
and its evaluation beside it (RUNG_eval, by `experiments.evaluate_vae`), and writes into --out:
ladder.md (the table: test -ELBO and -log p(x) at the largest k evaluated, active units, sample
quality, epochs and training time, and the published value with the difference for a rung trained
on the literature protocol's settings on Fashion-MNIST), ladder.json (the same rows), ladder.png
(each rung's -log p(x) beside the published one), and ladder_samples.png and
ladder_interpolations.png (each trained rung's samples and semantic interpolation side by side).
One seed: ± is the standard error over the test images; a population (--num-seeds): mean [95%
interval] over its seeds. Each single-seed rung is also compared image by image with every rung
above it that differs from it in one setting only (the model, the prior or the objective), both
evaluated on the same test images with evaluate_vae's per-image bounds: the mean difference and its
standard error, which the images' spread does not inflate, say what that one change bought
(ladder_changes.png: each beside the difference between the two published values). A rung still
training, or not evaluated yet, is listed with the epochs it reached and whether a process trains it
now (its folder's lock) or it was stopped, and the same for an evaluation begun and not finished; an
evaluation not of the run's final params (of an earlier epoch, of one member) is flagged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from aejax import plotting, stats
from aejax.config import check_types, fail, option
from aejax.errors import RunDirError
from aejax.evaluation import evaluator, published
from aejax.io import runs
from aejax.io.files import read_json_lines, write_bytes, write_json
from experiments import common, evaluate_vae, vae_fashion_mnist

KIND = "ladder_report"
# Each trained rung's figures of training (`vae_fashion_mnist.FIGURES`) side by side: the report's file, the rungs'.
GALLERIES = {
    "ladder_samples.png": vae_fashion_mnist.FIGURES[0],
    "ladder_interpolations.png": vae_fashion_mnist.FIGURES[1],
}
OUTPUTS = (
    ("ladder.md", "ladder.json", "ladder.png", "ladder_changes.png", "ladder_curves.png")
    + tuple(GALLERIES)
    + (common.TRACEBACK,)
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the rungs are and where the report goes."""

    ladder: str = option("runs/ladder", "the folder with one training run per rung and its evaluation in RUNG_eval")
    out: str = option("runs/ladder/report", "output folder: ladder.md, ladder.json, ladder.png")
    overwrite: bool = option(False, "replace an earlier report in --out")

    def __post_init__(self):
        check_types(self)
        if not Path(self.ladder).is_dir():
            fail("ladder", f"must be a folder of training runs (what `make ladder` writes), got {self.ladder!r}")


def _read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if there is no such file (not written yet)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} is not readable JSON ({err}); write it again or move it aside") from None


def validation_curve(folder: Path, pixels: int) -> dict[int, float]:
    """Member 0's finite validation losses by epoch, in nats per image (the loss is per pixel), from
    history.jsonl's whole lines; an epoch run again after a resume keeps its last value."""
    path = folder / "history.jsonl"
    return {
        entry["epoch"]: entry["val_loss"] * pixels
        for entry in (read_json_lines(path) if path.is_file() else [])  # a torn last line is dropped, with a warning
        if entry.get("member", 0) == 0
        and isinstance(entry.get("val_loss"), (int, float))
        and math.isfinite(entry["val_loss"])  # a diverged epoch has no value to plot or to rank
    }


def _bound(evaluation: dict) -> dict:
    """-log p(x) at the largest k, and -ELBO: {k, nll, elbo} each {mean, low, high, n, spread}."""
    summary = evaluation.get("summary", [{"n": 1}])[0]
    if summary["n"] > 1:  # a population: its seeds (of the first grid point, with a sweep)
        k = max(int(key.rsplit("_k", 1)[1]) for key in summary if key.startswith("test_negative_iwae_nats_k"))

        def interval(stats: dict) -> dict:
            return {
                "mean": stats["mean"],
                "low": stats["ci95_low"],
                "high": stats["ci95_high"],
                "n": stats["n"],
                "spread": "95% interval over seeds",
            }

        return {
            "k": k,
            "nll": interval(summary[f"test_negative_iwae_nats_k{k}"]),
            "elbo": interval(summary["test_negative_elbo_nats"]),
            "active_units": summary["active_units"]["mean"],
            **{name: summary[name]["mean"] for name in evaluator.SAMPLE_QUALITY if name in summary},
        }
    # One model; or a sweep's grid point of one seed, which has no interval over seeds: its member's
    # standard error over the test images, as for one model.
    evaluation = evaluation.get("members", [evaluation])[0]
    k = max(int(key) for key in evaluation["test_negative_iwae_nats"])

    def standard_error(stats: dict) -> dict:
        half = stats["standard_error"]
        return {
            "mean": stats["mean"],
            "low": stats["mean"] - half,
            "high": stats["mean"] + half,
            "n": 1,
            "spread": "± standard error over the test images",
        }

    return {
        "k": k,
        "nll": standard_error(evaluation["test_negative_iwae_nats"][str(k)]),
        "elbo": standard_error(evaluation["test_negative_elbo_nats"]),
        "active_units": evaluation["diagnostics"]["active_units"],
        **{name: evaluation[name] for name in evaluator.SAMPLE_QUALITY if name in evaluation},
    }


def _digests(metrics: dict | None) -> set[str]:
    if metrics is None:
        return set()
    rows = metrics.get("members", [metrics])
    return {row["params_sha256"] for row in rows if isinstance(row.get("params_sha256"), str)}


def on_protocol(definition: dict) -> bool:
    """Whether a run trained on 28 x 28 images with the literature preset's settings (any epoch budget)."""
    model = definition["model"]
    settings = {**definition, **model, "latent_dim": model.get("latent_dim", model.get("layer_dim"))}
    preset = vae_fashion_mnist.Config.PRESETS["literature"]
    return list(model["image_shape"]) == [28, 28] and all(
        (list(value) if isinstance(value, tuple) else value) == settings[name]
        for name, value in preset.items()
        if name in settings
    )


def rung(folder: Path, record: dict, curve: dict[int, float]) -> dict:
    """One row of the ladder: what the rung changes, how far it trained (`curve`: its validation
    loss by epoch, nats), and its evaluation if any."""
    definition = record["definition"]
    model = definition["model"]
    prior = model.get("prior", "standard")
    row = {
        "rung": folder.name,
        "model": model["name"],
        "prior": prior,
        "objective": definition["objective"],
        "train_samples": definition["train_samples"],
        "seeds": definition["num_seeds"],
        "on_protocol": on_protocol(definition),
    }
    training = _read_json(folder / "metrics.json")
    best_epoch = min(curve, key=curve.get) if curve else None
    row["training"] = {
        "status": "finished" if training is not None else runs.state(folder, record),
        "epochs": training["epochs_run"] if training else max(curve, default=0),
        "best_epoch": training["best_epoch"] if training else best_epoch,
        "best_val_nats": None if best_epoch is None else curve[best_epoch],
        "wall_seconds": training["train_wall_seconds_total"] if training else None,
    }
    evaluated_in = folder.with_name(folder.name + "_eval")
    evaluation = _read_json(evaluated_in / "metrics.json")
    if evaluation is None and (started := runs.read_record(evaluated_in)) is not None:
        row["evaluation_status"] = runs.state(evaluated_in, started)  # in progress, or stopped: --resume
    if evaluation is not None:
        row["evaluation"] = _bound(evaluation)
        row["evaluation"]["of_these_params"] = _digests(evaluation) == _digests(training)
        row["on_protocol"] &= evaluation["data"]["dataset"] == "fashion_mnist" and evaluation["binarize"]
    paper = published.fashion_mnist_nll(model["name"], prior, definition["objective"])
    row["published"] = paper if row["on_protocol"] else None
    return row


def _per_image(folder: Path) -> tuple[dict[str, np.ndarray], str] | None:
    """Member 0's bounds per test image (evaluate_vae's names: negative_elbo, negative_iwae_k{k}) and
    the fingerprint of those test images, or None where the evaluation has none (evaluate_vae before
    they were written)."""
    path, record = folder / evaluate_vae.PER_IMAGE, runs.read_record(folder)
    if not path.is_file() or record is None:
        return None
    with np.load(path) as arrays:
        return {name: np.asarray(arrays[name][0], np.float64) for name in arrays}, record["definition"]["data_sha256"]


def _settings(definition: dict) -> dict:
    """A run's definition by the settings a rung of the ladder changes one at a time, and the rest
    (the seed aside: another seed is not another method)."""
    model = dict(definition["model"])
    prior = (model.pop("prior", "standard"), model.pop("num_pseudo_inputs", None))
    rest = {k: v for k, v in definition.items() if k not in ("model", "objective", "train_samples", "seed")}
    return {
        "model": model,
        "prior": prior,
        "objective": (definition["objective"], definition["train_samples"]),
        "rest": rest,
    }


def change(a: dict, b: dict) -> str | None:
    """The one setting ("model", "prior" or "objective") in which two runs' definitions differ, or None
    where they differ in none of them, in more than one, or in anything else."""
    ours, theirs = _settings(a), _settings(b)
    differing = [name for name in ours if ours[name] != theirs[name]]
    return differing[0] if differing in (["model"], ["prior"], ["objective"]) else None


def paired_difference(above: dict, below: dict, per_image: dict[str, tuple | None]) -> dict | None:
    """How much lower `below`'s bounds are than `above`'s, image by image on the same test images:
    for -log p(x) at the rungs' k ("nats", "standard_error": the mean per-image difference and its
    standard error; "share_lower": the share of images on which `below`'s is lower) and the same for
    every bound both evaluated ("bounds": -ELBO and each -IWAE_k), or None where they cannot pair:
    other test images, another k, a population (its seeds' interval says more), no per-image bounds.
    `per_image`: each rung's `_per_image`."""
    k = below["evaluation"]["k"]
    if k != above["evaluation"]["k"] or above["seeds"] > 1 or below["seeds"] > 1:
        return None
    ours, theirs = per_image[below["rung"]], per_image[above["rung"]]
    if ours is None or theirs is None or ours[1] != theirs[1]:
        return None
    bounds = {
        name: stats.paired_difference(theirs[0][name], ours[0][name])
        for name in sorted(ours[0].keys() & theirs[0].keys())
        if ours[0][name].shape == theirs[0][name].shape
    }
    at_k = bounds.get(f"negative_iwae_k{k}")
    return None if at_k is None else {"against": above["rung"], "k": k, **at_k, "bounds": bounds}


def _nats(value: dict) -> str:
    if value["n"] > 1:  # a population's interval over its seeds
        return f"{value['mean']:.2f} [{value['low']:.2f}, {value['high']:.2f}] ({value['n']} seeds)"
    return f"{value['mean']:.2f} ± {value['high'] - value['mean']:.2f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        (
            "| rung | model, prior, objective | test −ELBO | test −log p(x) | published | difference | lower than "
            "the rung one setting away (paired) | active units | Fréchet distance / precision / recall | training |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        what = f"{row['model']}, {row['prior']}, {row['objective']}"
        if row["objective"] == "iwae":
            what += f" (k = {row['train_samples']})"
        paper = row["published"]
        shown_paper = "" if paper is None else f"{paper[0]:.2f}" + ("" if paper[1] is None else f" ± {paper[1]:.2f}")
        training = row["training"]
        trained = f"{training['epochs']:,} epochs" + (
            "" if training["best_epoch"] is None else f" (best {training['best_epoch']:,})"
        )
        if training["status"] != "finished":
            best = "" if training["best_val_nats"] is None else f", best validation {training['best_val_nats']:.2f}"
            trained += f", not finished: {training['status']}{best}"
        elif training["wall_seconds"] is not None:
            trained += f", {training['wall_seconds']:,.0f} s"
        evaluation = row.get("evaluation")
        if evaluation is None:
            status = row.get("evaluation_status")
            cells = ["not evaluated yet" if status is None else f"evaluation {status}", "", "", "", "", ""]
        else:
            nll = _nats(evaluation["nll"]) + f" (k = {evaluation['k']:,})"
            if not evaluation["of_these_params"]:
                nll += " (**not of the run's final params**)"
            difference = (  # the published values are at k = 5,000
                ""
                if paper is None
                else f"{evaluation['nll']['mean'] - paper[0]:+.2f}"
                if evaluation["k"] == published.K
                else f"(k = {evaluation['k']:,}, not {published.K:,})"
            )
            quality = (
                f"{evaluation['frechet_distance']:.2f} / {evaluation['precision']:.3f} / {evaluation['recall']:.3f}"
                if "frechet_distance" in evaluation
                else ""
            )
            below = "; ".join(
                f"{p['nats']:.2f} ± {p['standard_error']:.2f} than {p['against']} ({p['change']}; "
                f"lower on {p['share_lower']:.0%} of the images)"
                for p in evaluation.get("paired", [])
            )
            cells = [_nats(evaluation["elbo"]), nll, difference, below, f"{evaluation['active_units']:g}", quality]
        lines.append(
            f"| {row['rung']} | {what} | {cells[0]} | {cells[1]} | {shown_paper} | {' | '.join(cells[2:])} "
            f"| {trained} |"
        )
    return "\n".join(lines) + "\n"


def changes_figure(evaluated: list[dict]) -> plotting.Figure | None:
    """What each one change bought (the rows' paired differences, ± their standard errors) beside
    the difference between the two published values where both rungs have one; None where no rung
    is paired."""
    published_by_rung = {r["rung"]: r["published"] for r in evaluated}
    pairs = [(r, p) for r in evaluated for p in r["evaluation"]["paired"]]
    if not pairs:
        return None
    papers = [(published_by_rung[p["against"]], r["published"]) for r, p in pairs]
    figure = plotting.ladder(
        [
            f"{p['against']} → {r['rung']} ({p['change']}"
            + ("" if p["k"] == published.K else f"; k = {p['k']:,}")
            + ")"
            for r, p in pairs
        ],
        np.array([[p["nats"], p["nats"] - p["standard_error"], p["nats"] + p["standard_error"]] for _, p in pairs]),
        [None if above is None or below is None else (above[0] - below[0], None) for above, below in papers],
        "how much lower −log p(x) is after the change, nats (paired over the same test images)",
        "aejax: ± standard error of the paired difference",
        "published: the difference of the two published values",
    )
    figure.axes[0].axvline(0.0, color="0.4", lw=0.8)  # no change; a gain shows to its right
    return figure


def curves_figure(rows: list[dict], curves: dict[str, dict[int, float]]) -> plotting.Figure | None:
    """Each rung's validation loss by epoch, in nats (an IWAE-trained rung's is its own bound, with its
    k), on the 10 nats above the best, where the rungs differ (each label gives the rung's best); None
    where no rung has trained an epoch."""
    shown = {}
    for row in rows:
        if curve := curves[row["rung"]]:
            values = np.full(max(curve), np.nan)
            values[np.array(list(curve)) - 1] = list(curve.values())
            best = min(curve, key=curve.get)
            objective = "" if row["objective"] == "elbo" else f", −IWAE k = {row['train_samples']}"
            member = "" if row["seeds"] == 1 else f", the first of {row['seeds']} seeds"
            shown[f"{row['rung']} (best {curve[best]:.2f} at epoch {best:,}{objective}{member})"] = values
    if not shown:
        return None
    figure = plotting.learning_curves(shown, list(shown), "validation −ELBO, nats (lower is better)", fmt="-")
    figure.set_size_inches(8.0, 4.8)
    lowest = min(np.nanmin(values) for values in shown.values())
    figure.axes[0].set_ylim(lowest - 0.5, lowest + 10.0)
    return figure


def gallery(rows: list[dict], ladder: Path, name: str) -> plotting.Figure | None:
    """Each rung's figure `name` (its training run's: samples, interpolation) side by side, in the
    ladder's order, titled with the rung and its -log p(x); None where no rung has one (a run writes
    its figures when its training ends)."""
    shown = [(row, ladder / row["rung"] / name) for row in rows if (ladder / row["rung"] / name).is_file()]
    if not shown:
        return None
    titles = [
        f"{row['rung']}: −log p(x) {row['evaluation']['nll']['mean']:.2f} (k = {row['evaluation']['k']:,})"
        if "evaluation" in row
        else f"{row['rung']}: not evaluated yet"
        for row, _ in shown
    ]
    return plotting.panels([plt.imread(path) for _, path in shown], titles)


def run(config: Config) -> int:
    runs.check_folder(config.out, KIND, overwrite=config.overwrite, outputs=OUTPUTS, resumable=False)
    found, definitions, curves = [], {}, {}
    for folder in sorted(p for p in Path(config.ladder).iterdir() if p.is_dir()):
        record = runs.read_record(folder)
        if record is not None and record.get("kind") == vae_fashion_mnist.KIND:
            definitions[folder.name] = record["definition"]
            pixels = math.prod(record["definition"]["model"]["image_shape"])
            curves[folder.name] = validation_curve(folder, pixels)
            found.append(rung(folder, record, curves[folder.name]))
    if not found:
        fail(
            "ladder",
            f"holds no training run of experiments.vae_fashion_mnist (what `make ladder` writes): {config.ladder}",
        )
    # The ladder climbs: the evaluated rungs from the worst bound to the best, then the rest.
    found.sort(
        key=lambda r: (-r["evaluation"]["nll"]["mean"], r["rung"]) if "evaluation" in r else (math.inf, r["rung"])
    )
    evaluated = [r for r in found if "evaluation" in r]
    per_image = {r["rung"]: _per_image(Path(config.ladder) / f"{r['rung']}_eval") for r in evaluated}  # read once
    for i, below in enumerate(evaluated):  # what each one change bought, in the row of the better rung
        below["evaluation"]["paired"] = [
            {**paired, "change": setting}
            for above in evaluated[:i]
            if (setting := change(definitions[above["rung"]], definitions[below["rung"]])) is not None
            and (paired := paired_difference(above, below, per_image)) is not None
        ]
    out = Path(config.out)
    with runs.claim(
        out,
        KIND,
        {"ladder": str(Path(config.ladder).resolve())},
        overwrite=config.overwrite,
        outputs=OUTPUTS,
        resumable=False,
    ):
        table = markdown(found)
        write_bytes(out / "ladder.md", table.encode())
        write_json(out / "ladder.json", {"published_source": published.SOURCE, "rungs": found})
        if evaluated:
            plotting.save_figure(
                plotting.ladder(
                    [
                        r["rung"]
                        + ("" if r["evaluation"]["k"] == published.K else f" (k = {r['evaluation']['k']:,})")
                        + ("" if r["evaluation"]["of_these_params"] else " (other params)")
                        for r in evaluated
                    ],
                    np.array([[r["evaluation"]["nll"][key] for key in ("mean", "low", "high")] for r in evaluated]),
                    [r["published"] for r in evaluated],
                    f"test −log p(x), nats ({published.SOURCE.split(', ')[1]}; lower is better)",
                    "aejax: ± standard error over the test images"
                    + ("; seeds: 95% interval" if any(r["seeds"] > 1 for r in evaluated) else ""),
                ),
                out / "ladder.png",
            )
        if (figure := changes_figure(evaluated)) is not None:
            plotting.save_figure(figure, out / "ladder_changes.png")
        if (figure := curves_figure(found, curves)) is not None:
            plotting.save_figure(figure, out / "ladder_curves.png")
        for saved_as, name in GALLERIES.items():
            if (figure := gallery(found, Path(config.ladder), name)) is not None:
                plotting.save_figure(figure, out / saved_as)
    print(table, end="")
    print(f"{len(found)} rungs, {len(evaluated)} evaluated -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.main(Config, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
