"""End-to-end runs of the experiment CLIs on tiny configurations and the real 900-image subset."""

import argparse
import fcntl
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aejax.evaluation import evaluator
from aejax.io import runs
from experiments import common, evaluate_vae, ladder_report, linear_ae_pca, vae_fashion_mnist


def test_linear_ae_cli_writes_figures_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert linear_ae_pca.main(["--epochs", "20", "--seed", "0", "--spread-seeds", "4", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {
        "linear_autoencoder_pca.png",
        "linear_autoencoder_vs_pca.png",
        "metrics.json",
        "run.json",
        ".aejax.lock",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["loss_history"]) == 20
    assert metrics["pca_optimal_loss"] <= metrics["final_loss"]
    assert metrics["max_principal_angle_rad"] < 0.2  # key 0 measured 0.063 rad
    # Full-batch GD converges onto the PCA subspace: measured 1.1e-7 rad, MSE ratio 1.0000.
    assert metrics["converged"]["max_principal_angle_rad"] < 1e-5
    assert metrics["converged"]["loss_over_pca_optimum"] < 1.0001
    spread = metrics["spread_over_seeds"]
    assert spread["seeds"] == [0, 1, 2, 3] and len(spread["per_seed"]) == 4
    assert spread["loss_over_pca_optimum"]["min"] >= 1.0  # nothing beats the closed-form optimum
    assert spread["per_seed"][0]["max_principal_angle_rad"] == metrics["max_principal_angle_rad"]  # key 0 is the run
    assert "largest principal angle" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--batch-size", "100"], "--batch-size must be at most"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_linear_ae_cli_rejects_bad_flags(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        linear_ae_pca.main(flags + ["--out", str(tmp_path / "out")])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_unwritable_out_is_named(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        linear_ae_pca.main(["--out", str(blocker / "sub")])
    assert info.value.code == 2 and "is not a writable folder" in capsys.readouterr().err


def test_vae_and_evaluation_clis_end_to_end(subset_dir, tmp_path, capsys):
    train_out, eval_out = tmp_path / "vae", tmp_path / "vae_eval"
    code = vae_fashion_mnist.main(
        [
            "--data-dir",
            str(subset_dir),
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--num-validation",
            "120",
            "--out",
            str(train_out),
        ]
    )
    assert code == 0
    assert {p.name for p in train_out.iterdir()} == {
        "metrics.json",
        "params.msgpack",
        "vae_generated_images_plot.png",
        "semantic_interpolation_plot.png",
        "vae_reconstructions_plot.png",
        "vae_learning_curves.png",
        "checkpoints",
        "history.jsonl",
        "run.json",
        ".aejax.lock",
    }
    metrics = json.loads((train_out / "metrics.json").read_text())
    assert len(metrics["history"]["val_loss"]) == 2 and metrics["train_examples_per_sec"] > 0
    assert metrics["history"]["val_loss"][1] < metrics["history"]["val_loss"][0]
    assert 0.0 < metrics["final_val_rounded_accuracy"] <= 1.0

    code = evaluate_vae.main(
        [
            "--params",
            str(train_out / "params.msgpack"),
            "--data-dir",
            str(subset_dir),
            "--iwae-k",
            "1,20",
            "--elbo-samples",
            "2",
            "--out",
            str(eval_out),
        ]
    )
    assert code == 0
    results = json.loads((eval_out / "metrics.json").read_text())
    iwae = results["test_negative_iwae_nats"]
    assert results["num_test_images"] == 180 and results["likelihood"] == "bernoulli"
    assert iwae["20"]["mean"] < iwae["1"]["mean"]  # more samples, tighter bound (lower negative bound)
    assert 0 < iwae["20"]["standard_error"] < 10
    # The grey-level cross-entropy cannot go below the targets' entropy (a perfect model's score).
    assert results["test_entropy_floor_nats"] < iwae["20"]["mean"]
    assert {p.name for p in eval_out.iterdir()} >= {
        "vae_latent_space_plot.png",
        "vae_latent_traversal_plot.png",
        "vae_posterior_diagnostics.png",
    }

    # The bounds per test image, the means' source: one row per member.
    with np.load(eval_out / evaluate_vae.PER_IMAGE) as per_image:
        assert sorted(per_image) == ["negative_elbo", "negative_iwae_k1", "negative_iwae_k20"]
        assert per_image["negative_iwae_k20"].shape == (1, 180)
        # Stored as computed (float32); averaged in float64 as evaluate_vae does (numpy averages float32 in float32).
        mean = np.asarray(per_image["negative_iwae_k20"][0], np.float64).mean()
        assert mean == pytest.approx(iwae["20"]["mean"], rel=1e-12)

    # The ladder's report reads the run and its evaluation beside it (RUN_eval).
    report = tmp_path / "report"
    assert ladder_report.main(["--ladder", str(tmp_path), "--out", str(report)]) == 0
    (row,) = json.loads((report / "ladder.json").read_text())["rungs"]
    assert row["rung"] == "vae" and row["evaluation"]["of_these_params"] and row["training"]["epochs"] == 2
    assert row["evaluation"]["nll"]["mean"] == iwae["20"]["mean"] and row["evaluation"]["k"] == 20
    assert not row["on_protocol"] and row["published"] is None  # the chapter's model: nothing published to compare
    assert not (report / "ladder_changes.png").exists()  # one rung: no change to show
    assert (report / "ladder_curves.png").is_file()
    # The run's samples and interpolation, titled with its bound (a gallery of one rung here).
    samples = ladder_report.gallery([row], tmp_path, vae_fashion_mnist.FIGURES[0])
    assert [ax.get_title() for ax in samples.axes] == [f"vae: −log p(x) {iwae['20']['mean']:.2f} (k = 20)"]
    assert (report / "ladder_samples.png").is_file() and (report / "ladder_interpolations.png").is_file()
    assert ladder_report.gallery([{**row, "rung": "elsewhere"}], tmp_path, vae_fashion_mnist.FIGURES[0]) is None
    assert ladder_report.markdown([{**row, "published": [228.70, 0.15]}]).count("(k = 20, not 5,000)") == 1
    line = (report / "ladder.md").read_text().splitlines()[2]
    assert f"{iwae['20']['mean']:.2f} ± {iwae['20']['standard_error']:.2f} (k = 20)" in line and "2 epochs" in line
    assert (report / "ladder.png").stat().st_size > 0


def test_vae_cli_names_a_missing_data_dir(tmp_path, capsys):
    with pytest.raises(SystemExit):
        vae_fashion_mnist.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert "does not exist" in capsys.readouterr().err


def test_evaluation_cli_rejects_bad_params_and_k(tmp_path, capsys):
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"not msgpack")
    with pytest.raises(SystemExit):
        evaluate_vae.main(["--params", str(bad), "--out", str(tmp_path / "o")])
    assert "not a flax msgpack file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_vae.main(["--params", str(bad), "--iwae-k", "0,5", "--out", str(tmp_path / "o")])
    assert "--iwae-k must be distinct positive integers" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_population_through_the_cli(subset_dir, tmp_path, capsys):
    out = tmp_path / "population"
    code = vae_fashion_mnist.main(
        [
            "--data-dir",
            str(subset_dir),
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--num-validation",
            "120",
            "--num-seeds",
            "2",
            "--sweep",
            "beta=1,4",
            "--tensorboard",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["population"] == 4 and [(m["seed"], m["beta"]) for m in metrics["members"]] == [
        (42, 1.0),
        (43, 1.0),
        (42, 4.0),
        (43, 4.0),
    ]
    for member in metrics["members"]:
        assert {"final_val_loss", "final_val_rounded_accuracy", "params_sha256", "learning_rate"} <= set(member)
    summary = metrics["summary"]["final_val_loss"]
    assert summary["n"] == 4 and summary["ci95_low"] < summary["mean"] < summary["ci95_high"]
    by_beta = {g["beta"]: g for g in metrics["summary_by_hyperparameters"]}
    assert by_beta[4.0]["test_rate_nats"]["mean"] < by_beta[1.0]["test_rate_nats"]["mean"]  # beta buys a lower rate
    assert (out / "vae_rate_distortion.png").exists() and (out / "vae_learning_curves.png").exists()
    lines = (out / "history.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 2 and json.loads(lines[-1])["member"] == 3
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == [f"member_{i:03d}" for i in range(4)]
    printed = capsys.readouterr().out
    assert "VAE mlp population of 4" in printed  # one interval per grid point, not one pooled over betas
    assert "beta 1, learning rate 0.001: val_loss" in printed and "beta 4, learning rate 0.001: val_loss" in printed

    # One member of the population, evaluated on its own, matches its recorded params digest.
    evaluation = tmp_path / "eval"
    assert (
        evaluate_vae.main(
            [
                "--params",
                str(out / "params.msgpack"),
                "--data-dir",
                str(subset_dir),
                "--member",
                "3",
                "--iwae-k",
                "1,20",
                "--elbo-samples",
                "2",
                "--out",
                str(evaluation),
            ]
        )
        == 0
    )
    result = json.loads((evaluation / "metrics.json").read_text())
    assert result["likelihood"] == "bernoulli" and result["member"] == 3
    diagnostics = result["diagnostics"]
    assert len(diagnostics["kl_per_dim_nats"]) == 10 and 0 <= diagnostics["active_units"] <= 10
    assert sum(diagnostics["kl_per_dim_nats"]) == pytest.approx(diagnostics["rate_nats"], rel=1e-4)


ROOT = Path(__file__).resolve().parents[1]
# What each rung of `make ladder` changes in the literature protocol (docs/ladder.md's table).
RUNG_CHANGES = {
    "mlp": {},
    "mlp_vamp": {"prior": "vamp"},
    "hvae": {"model": "hvae"},
    "hvae_vamp": {"model": "hvae", "prior": "vamp"},
    "mlp_iwae": {"objective": "iwae", "train_samples": 5},
    "hvae_vamp_iwae": {"model": "hvae", "prior": "vamp", "objective": "iwae", "train_samples": 5},
    "conv": {"model": "conv"},
    "conv_hvae": {"model": "conv_hvae"},
    "conv_hvae_vamp": {"model": "conv_hvae", "prior": "vamp"},
}


def _make(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *arguments], cwd=ROOT, capture_output=True, text=True)


def test_make_ladder_trains_each_rung_on_the_protocol_then_evaluates_it(tmp_path):
    classifier = tmp_path / "classifier" / "classifier.msgpack"
    listed = _make("-n", "ladder", f"LADDER={tmp_path}", f"CLASSIFIER={classifier}", "SEEDS=3")
    assert listed.returncode == 0, listed.stderr
    commands = [shlex.split(line) for line in listed.stdout.splitlines() if " -m experiments." in line]
    trainings = {Path(c[c.index("--out") + 1]).name: c[3:] for c in commands if c[2] == "experiments.vae_fashion_mnist"}
    assert set(trainings) == set(RUNG_CHANGES)
    parser = common.config_parser(vae_fashion_mnist.Config, "")
    settings = {
        rung: vars(common.parse_args(parser, vae_fashion_mnist.Config, argv)) for rung, argv in trainings.items()
    }
    for rung, argv in trainings.items():
        common.config_from_args(vae_fashion_mnist.Config, argparse.Namespace(**settings[rung]))  # valid settings
        changed = {k: v for k, v in settings[rung].items() if v != settings["mlp"][k] and k != "out"}
        assert changed == RUNG_CHANGES[rung], rung  # one protocol, each rung changing only its own settings
        assert settings[rung]["num_seeds"] == 3 and settings[rung]["auto_resume"]
    assert settings["mlp"]["preset"] == "literature"
    evaluations = [c for c in commands if c[2] == "experiments.evaluate_vae"]
    assert all("--auto-resume" in c for c in evaluations)  # a stopped evaluation continues, too
    assert sorted((c[c.index("--params") + 1], c[c.index("--classifier") + 1]) for c in evaluations) == sorted(
        (str(tmp_path / rung / "params.msgpack"), str(classifier)) for rung in RUNG_CHANGES
    )
    assert [c for c in commands if c[2] == "experiments.train_classifier"]
    assert commands[-1][2:] == ["experiments.ladder_report", "--ladder", str(tmp_path), "--overwrite", "--out"] + [
        str(tmp_path / "report")
    ]
    # A rung's params stay after its evaluation (not deleted as an intermediate file).
    assert not [line for line in listed.stdout.splitlines() if line.startswith("rm ")]


def test_make_ladder_names_an_unknown_rung(tmp_path):
    refused = _make(str(tmp_path / "hvea" / "params.msgpack"), f"LADDER={tmp_path}")
    assert refused.returncode != 0
    assert "RUNGS has 'hvea'; the rungs: mlp mlp_vamp hvae" in refused.stderr
    assert not (tmp_path / "hvea").exists()


def _evaluated_rung(tmp_path, name, definition, evaluation, digests, per_image=None):
    """A rung's training run and evaluation folders as the scripts write them (the fields the report reads)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"kind": "vae_fashion_mnist", "definition": definition}))
    (folder / "metrics.json").write_text(
        json.dumps({"epochs_run": 800, "best_epoch": 750, "train_wall_seconds_total": 100.0, "members": digests})
    )
    evaluated = tmp_path / f"{name}_eval"
    evaluated.mkdir()
    (evaluated / "metrics.json").write_text(json.dumps(evaluation))
    if per_image is not None:
        images, values = per_image
        record = {"kind": "evaluate_vae", "definition": {"data_sha256": images}}
        (evaluated / "run.json").write_text(json.dumps(record))
        np.savez(evaluated / evaluate_vae.PER_IMAGE, negative_iwae_k5000=values[None])


def test_the_ladder_report_on_the_protocol_with_seeds_and_a_stale_evaluation(tmp_path, capsys):
    """A rung on the literature protocol stands beside its published value; a population's row is its
    seeds' mean [95% interval] (evaluate_vae's own summary); an evaluation of other params is flagged."""
    literature = vae_fashion_mnist.Config.PRESETS["literature"]
    definition = {
        **{k: v for k, v in literature.items() if k not in ("hidden_sizes", "latent_dim", "activation", "epochs")},
        "objective": "elbo",
        "train_samples": 1,
        "num_seeds": 3,
        "model": {
            "name": "hvae",
            "hidden_sizes": [300, 300],
            "layer_dim": 40,
            "activation": "gated",
            "image_shape": [28, 28],
            "prior": "vamp",
        },
    }
    members = [
        {
            "params_sha256": f"digest{i}",
            "test_negative_elbo_nats": {"mean": 229.0 + i},
            "test_negative_iwae_nats": {"5000": {"mean": 226.0 + i}},
            "diagnostics": {"active_units": 40 + i, "mutual_information_nats": 9.0},
        }
        for i in range(3)
    ]
    summary = {"beta": 1.0, "learning_rate": 5e-4, **evaluator.summarize(members, [5000])}
    evaluation = {"members": members, "summary": [summary], "data": {"dataset": "fashion_mnist"}, "binarize": True}
    digests = [{"params_sha256": m["params_sha256"]} for m in members]
    _evaluated_rung(tmp_path, "hvae_vamp", definition, evaluation, digests)
    stale = {**evaluation, "members": members[:1]}  # one member's evaluation of a population: not the run
    _evaluated_rung(tmp_path, "hvae_vamp_stale", definition, stale, digests)
    history = [{"epoch": epoch, "member": member, "val_loss": 0.3} for epoch in (1, 2) for member in range(3)]
    (tmp_path / "hvae_vamp" / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in history))
    assert ladder_report.main(["--ladder", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "ladder_curves.png").is_file()  # the first seed's curve
    rows = {r["rung"]: r for r in json.loads((tmp_path / "report" / "ladder.json").read_text())["rungs"]}
    nll = rows["hvae_vamp"]["evaluation"]["nll"]
    assert nll["mean"] == pytest.approx(227.0) and nll["n"] == 3
    assert nll["low"] == pytest.approx(227.0 - 4.303 / 3**0.5, abs=1e-3)  # t(0.975, 2 d.o.f.) * s / sqrt(3), s = 1
    assert rows["hvae_vamp"]["on_protocol"] and rows["hvae_vamp"]["published"] == [226.72, None]
    assert (
        rows["hvae_vamp"]["evaluation"]["of_these_params"]
        and not rows["hvae_vamp_stale"]["evaluation"]["of_these_params"]
    )
    table = capsys.readouterr().out
    assert "227.00 [224.52, 229.48] (3 seeds) (k = 5,000) | 226.72 | +0.28 |" in table
    assert "not of the run's final params" in table


def test_the_ladder_report_shows_a_one_seed_sweep_by_its_first_member(tmp_path, capsys):
    """A sweep of one seed per grid point has no interval over seeds (its summary's is None): its row is
    the first member's bound ± its standard error over the test images, as for one model."""
    definition = {"objective": "elbo", "train_samples": 1, "num_seeds": 1, "model": {"name": "mlp"}}
    definition["model"]["image_shape"] = [28, 28]
    members = [
        {
            "params_sha256": f"digest{i}",
            "beta": beta,
            "test_negative_elbo_nats": {"mean": 230.0 + i, "standard_error": 0.8},
            "test_negative_iwae_nats": {"50": {"mean": 228.0 + i, "standard_error": 0.7}},
            "diagnostics": {"active_units": 20 + i, "mutual_information_nats": 9.0},
        }
        for i, beta in enumerate((0.5, 2.0))
    ]
    summary = [{"beta": m["beta"], **evaluator.summarize([m], [50])} for m in members]
    assert summary[0]["test_negative_iwae_nats_k50"]["ci95_low"] is None  # what the report must not use
    evaluation = {"members": members, "summary": summary, "data": {"dataset": "fashion_mnist"}, "binarize": True}
    _evaluated_rung(tmp_path, "sweep", definition, evaluation, [{"params_sha256": m["params_sha256"]} for m in members])
    assert ladder_report.main(["--ladder", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    (row,) = json.loads((tmp_path / "report" / "ladder.json").read_text())["rungs"]
    assert row["evaluation"]["nll"] == {
        "mean": 228.0,
        "low": 227.3,
        "high": 228.7,
        "n": 1,
        "spread": "± standard error over the test images",
    }
    assert row["evaluation"]["k"] == 50 and row["evaluation"]["active_units"] == 20
    assert "| 230.00 ± 0.80 | 228.00 ± 0.70 (k = 50) |" in capsys.readouterr().out


def test_the_ladder_report_refuses_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        ladder_report.main(["--ladder", str(tmp_path), "--out", str(tmp_path / "report")])
    assert info.value.code == 2 and "--ladder holds no training run" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    with pytest.raises(SystemExit):
        ladder_report.main(["--ladder", str(tmp_path / "missing"), "--out", str(tmp_path / "report")])
    assert "--ladder must be a folder of training runs" in capsys.readouterr().err


def test_the_ladder_report_compares_rungs_one_setting_apart_image_by_image(tmp_path, capsys):
    """A single-seed rung is compared with each rung above it that differs from it in one setting
    (model, prior or objective), evaluated on the same test images: the mean of their per-image
    differences and its standard error, far tighter than either mean's. Rungs two settings apart, or
    evaluated on other test images, are not paired."""
    rng = np.random.default_rng(0)
    above = 227.0 + 20.0 * rng.standard_normal(1000)  # the images' spread dominates each mean's error
    below = above - 0.5 + 0.1 * rng.standard_normal(1000)
    iwae = {"objective": "iwae", "train_samples": 5}
    vamp = {"prior": "vamp", "num_pseudo_inputs": 500}
    for name, values, images, changes, model in (
        ("a", above, "same", {}, {}),
        ("b", below, "same", iwae, {}),  # a's objective changed
        ("c", below - 1.0, "other", iwae, {}),  # b on other test images
        ("d", below - 0.3, "same", iwae, vamp),  # b's prior changed: two settings away from a
    ):
        definition = {"objective": "elbo", "train_samples": 1, "num_seeds": 1, "seed": 42, **changes}
        definition["model"] = {"name": "mlp", "image_shape": [28, 28], **model}
        nll = {"mean": float(values.mean()), "standard_error": float(values.std(ddof=1) / 1000**0.5)}
        evaluation = {
            "params_sha256": name,
            "test_negative_elbo_nats": nll,
            "test_negative_iwae_nats": {"5000": nll},
            "diagnostics": {"active_units": 40},
            "data": {"dataset": "fashion_mnist"},
            "binarize": True,
        }
        _evaluated_rung(tmp_path, name, definition, evaluation, [{"params_sha256": name}], (images, values))
    assert ladder_report.main(["--ladder", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    rows = {r["rung"]: r for r in json.loads((tmp_path / "report" / "ladder.json").read_text())["rungs"]}
    (paired,) = rows["b"]["evaluation"]["paired"]
    differences = above - below
    assert paired["against"] == "a" and paired["change"] == "objective"
    assert paired["nats"] == pytest.approx(differences.mean(), rel=1e-12)
    assert paired["standard_error"] == pytest.approx(differences.std(ddof=1) / 1000**0.5, rel=1e-12)
    assert paired["share_lower"] == np.mean(differences > 0) and list(paired["bounds"]) == ["negative_iwae_k5000"]
    assert paired["standard_error"] < rows["b"]["evaluation"]["nll"]["high"] - rows["b"]["evaluation"]["nll"]["mean"]
    assert [(p["against"], p["change"]) for p in rows["d"]["evaluation"]["paired"]] == [("b", "prior")]
    assert rows["d"]["evaluation"]["paired"][0]["nats"] == pytest.approx(0.3, rel=1e-9)
    assert rows["c"]["evaluation"]["paired"] == []  # other test images: no pairing
    assert rows["a"]["evaluation"]["paired"] == []  # the top rung has none above it
    assert (tmp_path / "report" / "ladder_changes.png").is_file()
    cell = (
        f"{paired['nats']:.2f} ± {paired['standard_error']:.2f} than a (objective; lower on {paired['share_lower']:.0%}"
    )
    assert cell in capsys.readouterr().out


def test_rungs_one_setting_apart():
    """Another seed is the same method; another learning rate, or two settings at once, is not one change."""
    mlp = {"objective": "elbo", "train_samples": 1, "seed": 42, "learning_rate": 5e-4, "model": {"name": "mlp"}}
    hvae = {**mlp, "model": {"name": "hvae"}}
    assert ladder_report.change(mlp, hvae) == "model"
    assert ladder_report.change(mlp, {**mlp, "train_samples": 5, "objective": "iwae"}) == "objective"
    assert ladder_report.change(mlp, {**mlp, "model": {"name": "mlp", "prior": "vamp"}}) == "prior"
    assert ladder_report.change(mlp, {**mlp, "seed": 0}) is None  # no setting changed
    assert ladder_report.change(mlp, {**hvae, "seed": 0}) == "model"
    assert ladder_report.change(mlp, {**hvae, "learning_rate": 1e-3}) is None
    assert ladder_report.change(mlp, {**hvae, "objective": "iwae"}) is None


def test_a_rungs_validation_curve_is_member_0s_last_value_per_epoch_in_nats(tmp_path):
    """After a resume an epoch can appear twice in history.jsonl: its last value counts; other members
    and lines without a finite validation loss are not read."""
    lines = [
        {"epoch": 1, "member": 0, "val_loss": 0.5},
        {"epoch": 1, "member": 1, "val_loss": 0.1},
        {"epoch": 2, "member": 0, "val_loss": 0.4},
        {"epoch": 2, "member": 0, "val_loss": 0.3},  # epoch 2 again, after a resume
        {"epoch": 3, "member": 0, "loss": 0.2},
        {"epoch": 4, "member": 0, "val_loss": float("nan")},  # diverged
    ]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert ladder_report.validation_curve(tmp_path, 784) == {1: 0.5 * 784, 2: 0.3 * 784}
    assert ladder_report.validation_curve(tmp_path / "missing", 784) == {}


def test_the_ladder_report_says_whether_an_unfinished_rung_is_training_now(tmp_path):
    """A rung's run.json says "running" both while it trains and after its process was killed: the
    folder's lock tells the two apart."""
    definition = {"objective": "elbo", "train_samples": 1, "num_seeds": 1, "model": {"name": "conv"}}
    definition["model"]["image_shape"] = [28, 28]
    folder = tmp_path / "conv"
    folder.mkdir()
    record = {"kind": "vae_fashion_mnist", "status": "running", "pid": 12345, "host": "node7", "definition": definition}
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "history.jsonl").write_text(json.dumps({"epoch": 1, "member": 0, "val_loss": 0.3}) + "\n")

    def status():
        ladder_report.main(["--ladder", str(tmp_path), "--out", str(tmp_path / "report"), "--overwrite"])
        (row,) = json.loads((tmp_path / "report" / "ladder.json").read_text())["rungs"]
        return row["training"]["status"]

    assert "was running as pid 12345 on node7, which no longer exists" in status()
    lock = os.open(folder / runs.LOCK, os.O_RDWR | os.O_CREAT)  # as a training holds it
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.pwrite(lock, b"pid 777 on node7 since 2026-12-06", 0)
        assert status() == "in progress (pid 777 on node7 since 2026-12-06)"
    finally:
        os.close(lock)
    assert "in progress" in (tmp_path / "report" / "ladder.md").read_text()

    # Trained, and its evaluation stopped part way (a session's end): the row says so, not "not evaluated".
    (folder / "metrics.json").write_text(json.dumps({"epochs_run": 1, "best_epoch": 1, "train_wall_seconds_total": 9}))
    evaluation = tmp_path / "conv_eval"
    evaluation.mkdir()
    stopped = {"kind": evaluate_vae.KIND, "status": "stopped", "stopped_by": "SIGTERM", "ended": "2026-12-07T05:00"}
    (evaluation / "run.json").write_text(json.dumps(stopped))
    status()
    assert "| evaluation stopped by SIGTERM at 2026-12-07T05:00 |" in (tmp_path / "report" / "ladder.md").read_text()
