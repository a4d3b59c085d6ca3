"""Seconds per epoch of each rung of the VAE ladder on this machine, and of its evaluation.

    python -m benchmarks.ladder [--rungs mlp,hvae --epochs 3 --data-dir DIR --json out.json]
    python -m benchmarks.ladder --data-dir DIR --dry-run     # every rung at toy sizes (a smoke test)

`make ladder` trains each rung for up to 2,000 epochs of the literature protocol (50,000 training
and 10,000 validation images, early stopping after 50 epochs without progress), then evaluates it
(IWAE k = 5,000 over the 10,000 test images, in 100 batches of 100). What that costs depends on the
rung and the machine; this measures it, rung by rung: the rung's own settings (the literature
preset with the rung's flags, read from the Makefile's `rung_NAME` lines that `make ladder` passes),
trained by `fit` as the training command trains it, for --epochs epochs on the full data. Reported:
the seconds `fit.prepare` takes (compiling the epoch), of the first epoch, and the median of the
other epochs (training, validation and the host's bookkeeping), then the IWAE bound with k = 5,000
on one batch of 100 test images (the median of --repeats runs after a compiling one). A table on
stdout; every number, with what ran it, in --json.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax

from aejax import data, runtime
from aejax.errors import UsageError
from aejax.evaluation import metrics, published
from aejax.io.files import check_writable, write_json
from aejax.io.streams import tolerant_output
from aejax.models import likelihoods
from aejax.training import fit
from benchmarks import throughput
from experiments import common, evaluate_vae, vae_fashion_mnist

MAKEFILE = Path(throughput.REPO_ROOT) / "Makefile"
K = published.K  # evaluate_vae's largest k, the published tables' k
EVAL_BATCH = evaluate_vae.Config.batch_size  # evaluate_vae's test images per compiled call
DRY = ["--num-validation", "100", "--num-pseudo-inputs", "10"]  # toy sizes on any data


def rungs(makefile: Path = MAKEFILE) -> dict[str, list[str]]:
    """Each rung's flags beside `--preset literature`, as `make ladder` passes them (the Makefile's
    `rung_NAME := FLAGS` lines), in the Makefile's order."""
    lines = re.finditer(r"^rung_(\w+)\s*:=[ \t]*(.*)$", makefile.read_text(), re.MULTILINE)
    return {line.group(1): shlex.split(line.group(2)) for line in lines}


class EpochClock:
    """A `fit` writer that notes when each epoch's metrics arrive (after its validation)."""

    def __init__(self):
        self.times = [time.perf_counter()]

    def write(self, epoch: int, records: list[dict]) -> None:
        self.times.append(time.perf_counter())

    def close(self) -> None:
        pass

    def epochs(self) -> list[float]:
        """Seconds of each epoch, the first from when the clock was made."""
        return [b - a for a, b in zip(self.times, self.times[1:])]


def rung_config(flags: list[str], epochs: int, data_dir: str | None, dry_run: bool) -> vae_fashion_mnist.Config:
    """The training command's config of a rung with these flags (ConfigError if it is not valid)."""
    argv = ["--preset", "literature", *flags, "--epochs", str(epochs)]
    argv += (["--data-dir", data_dir] if data_dir else []) + (DRY if dry_run else [])
    parser = common.config_parser(vae_fashion_mnist.Config, "")
    return common.config_from_args(vae_fashion_mnist.Config, common.parse_args(parser, vae_fashion_mnist.Config, argv))


def time_rung(config: vae_fashion_mnist.Config, splits: dict, k: int, repeats: int) -> dict:
    """One rung's seconds: compiling, its first epoch, the median of the others, IWAE k on 100 test images."""
    start = time.perf_counter()
    plan = fit.prepare(config, splits["train"].images)
    compile_seconds = time.perf_counter() - start
    clock = EpochClock()
    result = fit.fit(config, splits["train"].images, plan=plan, writers=[clock])  # with fit's progress bar
    seconds = clock.epochs()
    test = data.unit_float_images("test images", splits["test"].images[:EVAL_BATCH])
    test = likelihoods.binarize_for_evaluation(test, "test")
    params, key = result.member_params(0), jax.random.key(0)

    def bound():
        return metrics.iwae_bound(result.model, params, test, key, k).block_until_ready()

    bound()  # compiles
    iwae = []
    for _ in range(repeats):
        begun = time.perf_counter()
        bound()
        iwae.append(time.perf_counter() - begun)
    return {
        "compile_seconds": compile_seconds,
        "first_epoch_seconds": seconds[0],
        "epoch_seconds": statistics.median(seconds[1:]),
        "epochs_timed": len(seconds) - 1,
        "training_examples": len(splits["train"].images) - config.data.num_validation,
        "iwae_images": len(test),
        "iwae_seconds": statistics.median(iwae),
    }


def markdown(report: dict) -> str:
    lines = [
        f"{report['device']}, jax {report['environment']['jax_version']}, {report['date']}"
        + (" (dry run: toy sizes)" if report["dry_run"] else ""),
        "",
        "| rung | flags beside --preset literature | compile, s | first epoch, s | epoch, s (median) "
        f"| IWAE k = {report['iwae_k']:,} on {EVAL_BATCH} test images, s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["rungs"].items():
        lines.append(
            f"| {name} | {' '.join(row['flags']) or '(none)'} | {row['compile_seconds']:.1f} "
            f"| {row['first_epoch_seconds']:.2f} | {row['epoch_seconds']:.2f} (of {row['epochs_timed']}) "
            f"| {row['iwae_seconds']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    runtime.configure()
    tolerant_output()  # a closed reader (`| head`) must not lose the JSON at the end
    known = rungs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rungs", default=",".join(known), help="comma-separated rungs (default: all of them)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs per rung; the first, which compiles, is reported apart (default: 3)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed IWAE runs per rung (default: 3)")
    parser.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--json", default=None, help="write the whole report to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on any machine (a smoke test)")
    args = parser.parse_args(argv)
    chosen = [name for name in args.rungs.split(",") if name]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        parser.error(f"--rungs must name rungs among {', '.join(known)}, got {args.rungs!r}")
    if args.epochs < 2 or args.repeats < 1:
        parser.error(f"--epochs must be at least 2 and --repeats at least 1, got {args.epochs} and {args.repeats}")
    if args.json and (problem := check_writable(args.json)):
        parser.error(f"--json {args.json!r} {problem}")
    try:  # every rung's settings and the data, before any timing
        configs = {name: rung_config(known[name], args.epochs, args.data_dir, args.dry_run) for name in chosen}
        splits = configs[chosen[0]].source.load_splits()  # the rungs change the model, not the data
        images = splits["train"].images
        for config in configs.values():
            fit.check(config, len(images), config.model.build(images.shape[1:]))
    except UsageError as err:
        parser.error(str(err))
    device = jax.devices()[0]
    report = {
        "date": datetime.date.today().isoformat(),
        "device": f"{device.device_kind} ({device.platform})",
        "environment": runtime.describe(),
        "dry_run": args.dry_run,
        "iwae_k": 10 if args.dry_run else K,
        "rungs": {},
    }
    for name in chosen:
        print(f"{name}: {' '.join(known[name]) or '(the literature preset)'}", flush=True)
        timed = time_rung(configs[name], splits, report["iwae_k"], args.repeats)
        report["rungs"][name] = {"flags": known[name], **timed}
    print(markdown(report))
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
