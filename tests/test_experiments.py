"""End-to-end runs of the experiment CLIs on tiny configurations and the real 900-image subset."""

import json

import pytest

from experiments import evaluate_vae, linear_ae_pca, vae_fashion_mnist


def test_linear_ae_cli_writes_figures_and_metrics(tmp_path, capsys):
    linear_ae_pca.main(["--epochs", "20", "--seed", "0", "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} == {
        "linear_autoencoder_pca.png", "linear_autoencoder_vs_pca.png", "metrics.json",
    }
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["loss_history"]) == 20
    assert metrics["pca_optimal_loss"] <= metrics["final_loss"]
    assert metrics["max_principal_angle_rad"] < 0.2  # key 0 measured 0.063 rad
    assert "largest principal angle" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [(["--epochs", "0"], "epochs must be a positive integer"),
                                            (["--batch-size", "100"], "batch_size must be at most"),
                                            (["--no-such-flag"], "unrecognized arguments")])
def test_linear_ae_cli_rejects_bad_flags(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        linear_ae_pca.main(flags + ["--out", str(tmp_path / "out")])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_unwritable_out_is_named(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="not a writable directory"):
        linear_ae_pca.main(["--out", str(blocker / "sub")])


def test_vae_and_evaluation_clis_end_to_end(subset_dir, tmp_path, capsys):
    train_out, eval_out = tmp_path / "vae", tmp_path / "eval"
    code = vae_fashion_mnist.main([
        "--data-dir", str(subset_dir), "--epochs", "2", "--batch-size", "64",
        "--num-validation", "120", "--out", str(train_out),
    ])
    assert code == 0
    assert {p.name for p in train_out.iterdir()} == {
        "metrics.json", "params.msgpack", "vae_generated_images_plot.png", "semantic_interpolation_plot.png",
        "vae_reconstructions_plot.png", "vae_learning_curves.png", "checkpoints",
    }
    metrics = json.loads((train_out / "metrics.json").read_text())
    assert len(metrics["history"]["val_loss"]) == 2 and metrics["train_examples_per_sec"] > 0
    assert metrics["history"]["val_loss"][1] < metrics["history"]["val_loss"][0]
    assert 0.0 < metrics["final_val_rounded_accuracy"] <= 1.0

    code = evaluate_vae.main([
        "--params", str(train_out / "params.msgpack"), "--data-dir", str(subset_dir),
        "--iwae-k", "1,20", "--elbo-samples", "2", "--out", str(eval_out),
    ])
    assert code == 0
    results = json.loads((eval_out / "metrics.json").read_text())
    iwae = results["test_negative_iwae_nats"]
    assert results["num_test_images"] == 180
    assert iwae["20"] < iwae["1"]  # more samples, tighter bound (lower negative bound)
    assert {p.name for p in eval_out.iterdir()} >= {"vae_latent_space_plot.png", "vae_latent_traversal_plot.png"}


@pytest.mark.parametrize("flags, message", [
    (["--recipe", "keras"], "invalid choice"),
    (["--epochs", "-1"], "--epochs must be a positive integer"),
    (["--batch-size", "5000"], "--batch-size must be at most the 600 training examples"),
    (["--num-validation", "720"], "--num-validation must be smaller than the 720"),
])
def test_vae_cli_rejects_bad_flags(subset_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        vae_fashion_mnist.main(["--data-dir", str(subset_dir), "--num-validation", "120", *flags, "--out", str(out)])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()  # nothing written for a rejected run


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
    assert "--iwae-k must be positive integers" in capsys.readouterr().err
