"""The params file: members with their manifest, the first format still read, others refused."""

import hashlib
import json

import flax.serialization
import jax
import numpy as np
import pytest

from aejax.errors import ConfigError, ParamsFileError
from aejax.io import params_file
from aejax.models import mlp, registry, vae


def _stacked(count):
    params = mlp.MLP(hidden_sizes=(4,), latent_dim=2).init(jax.random.key(0))
    return params, jax.tree.map(lambda x: np.stack([np.asarray(x)] * count), params)


def test_members_and_manifest_round_trip_and_the_bytes_are_the_runs(tmp_path):
    one, stacked = _stacked(2)
    manifest = {"model": registry.to_dict(mlp.MLP(hidden_sizes=(4,), latent_dim=2)), "members": [{}, {}]}
    path = params_file.write(tmp_path / "p.msgpack", stacked, manifest)
    members, read, raw = params_file.read(path)
    assert read == manifest and len(members) == 2 and raw == path.read_bytes()
    assert params_file.member_digest(members[1]) == params_file.member_digest(jax.tree.map(np.asarray, one))
    assert params_file.write(tmp_path / "q.msgpack", stacked, manifest).read_bytes() == raw  # same run, same bytes


def test_the_first_format_is_read_as_the_chapter_model_with_binarization_a_setting(tmp_path):
    _, stacked = _stacked(1)
    old = {
        "kind": "vae_fashion_mnist",
        "members": [{"seed": 0}],
        "model": {
            "architecture": "mlp_vae",
            "hidden_sizes": [4],
            "latent_dim": 2,
            "likelihood": "binarized",
            "activation": "selu",
        },
    }
    path = tmp_path / "old.msgpack"
    path.write_bytes(
        flax.serialization.msgpack_serialize(
            {"format": "aejax.params/1", "manifest": json.dumps(old), "params": stacked}
        )
    )
    _, manifest, _ = params_file.read(path)
    assert manifest["model"] == {
        "name": "mlp",
        "hidden_sizes": [4],
        "latent_dim": 2,
        "activation": "selu",
        "image_shape": [28, 28],
        "likelihood": "bernoulli",
    }
    assert manifest["binarize"] is True and manifest["data"] == {"dataset": "fashion_mnist"}


def test_files_that_do_not_say_what_they_hold_are_refused(tmp_path):
    one, stacked = _stacked(3)
    bare = tmp_path / "bare.msgpack"
    bare.write_bytes(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, one)))
    with pytest.raises(ParamsFileError, match="is not an aejax.params/2 file"):
        params_file.read(bare)
    wrong = params_file.write(tmp_path / "wrong.msgpack", stacked, {"members": [{}, {}]})  # 3 stacked, 2 listed
    with pytest.raises(ParamsFileError, match="the manifest lists 2 members"):
        params_file.read(wrong)
    (tmp_path / "junk.msgpack").write_bytes(b"\x00\xff junk")
    with pytest.raises(ParamsFileError, match="is not a flax msgpack file"):
        params_file.read(tmp_path / "junk.msgpack")


def test_load_gives_the_model_the_file_describes_and_checks_only_the_members_asked_for(tmp_path):
    model = mlp.MLP(hidden_sizes=(4,), latent_dim=2)
    _, stacked = _stacked(2)
    stacked = jax.tree.map(lambda x: x.copy(), stacked)
    stacked["decoder"]["logits"]["bias"][1, 0] = np.nan  # member 1 is broken
    manifest = {"model": {**registry.to_dict(model), "likelihood": "bernoulli"}, "members": [{}, {}]}
    path = params_file.write(tmp_path / "p.msgpack", stacked, manifest)
    trained = params_file.load(path, checked=[0])
    assert trained.model == model and trained.likelihood == "bernoulli" and len(trained.members) == 2
    assert trained.binarize is False  # the manifest does not say so
    binarized = params_file.write(tmp_path / "b.msgpack", stacked, {**manifest, "binarize": True})
    assert params_file.load(binarized, checked=[0]).binarize is True
    assert trained.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    mean, _ = vae.encode(trained.model, trained.members[0], np.zeros((3, 28, 28), np.float32))
    assert mean.shape == (3, 2)
    with pytest.raises(ParamsFileError, match=r"\(member 1\): .*decoder/logits/bias holds 1 NaN"):
        params_file.load(path)
    with pytest.raises(ConfigError, match="member must be below the population's 2 members, got 2"):
        params_file.load(path, checked=[2])
    unknown = params_file.write(
        tmp_path / "u.msgpack", stacked, {**manifest, "model": {"name": "mlp", "likelihood": "x"}}
    )
    with pytest.raises(ParamsFileError, match="records the likelihood 'x'"):
        params_file.load(unknown)
