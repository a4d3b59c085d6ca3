"""One run owns its output folder: lock, run record, refusals that say how to proceed."""

import json

import pytest

from aejax.io import runs

DEFINITION = {"seed": 42, "data_sha256": "abc"}
OUTPUTS = ("metrics.json", "checkpoints")


def _claim(out, **kwargs):
    return runs.claim(out, "train", kwargs.pop("definition", DEFINITION), outputs=OUTPUTS, **kwargs)


def test_a_folder_in_use_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    with _claim(out):
        with pytest.raises(runs.RunDirError, match=r"is in use by another run \(pid \d+ on .* since .*\)"):
            with _claim(out, resume=True):
                pass
    with _claim(out, overwrite=True):  # free again once the first run ended
        pass


def test_a_finished_run_is_neither_continued_nor_clobbered_silently(tmp_path):
    out = tmp_path / "run"
    with _claim(out):
        (out / "metrics.json").write_text("{}")
        (out / "checkpoints").mkdir()
    record = runs.read_record(out)
    assert record["status"] == "finished" and record["definition"] == DEFINITION
    with pytest.raises(runs.RunDirError, match="pass --resume to continue it, --overwrite to replace it"):
        with _claim(out):
            pass
    with pytest.raises(runs.RunDirError, match=r"different settings: seed 42 \(now 7\)"):
        with _claim(out, resume=True, definition={**DEFINITION, "seed": 7}):
            pass
    assert (out / "metrics.json").exists() and runs.read_record(out)["status"] == "finished"  # untouched
    with _claim(out, resume=True):
        assert (out / "checkpoints").exists()  # resume keeps everything
    with _claim(out, overwrite=True):
        assert not (out / "metrics.json").exists() and not (out / "checkpoints").exists()


def test_another_kind_of_run_is_always_refused(tmp_path):
    out = tmp_path / "run"
    with _claim(out):
        (out / "metrics.json").write_text('{"mine": 1}')
    for flags in ({}, {"overwrite": True}):
        with pytest.raises(
            runs.RunDirError, match="holds the outputs of a train run, which this evaluate run must not touch"
        ):
            with runs.claim(out, "evaluate", {}, outputs=("metrics.json",), **flags):
                pass
    assert json.loads((out / "metrics.json").read_text()) == {"mine": 1}


def test_unrecorded_outputs_are_not_overwritten_and_refusals_leave_no_folder(tmp_path):
    out = tmp_path / "legacy"
    (out / "checkpoints").mkdir(parents=True)
    with pytest.raises(runs.RunDirError, match="already holds checkpoints of an unrecorded run"):
        with _claim(out):
            pass
    fresh = tmp_path / "fresh"
    other = tmp_path / "other"
    with _claim(other):
        pass
    with pytest.raises(runs.RunDirError):
        with runs.claim(other, "evaluate", {}):
            pass
    assert not fresh.exists()


def test_status_records_failures_and_interrupts_and_stale_temporaries_go(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".metrics.json.0123456789abcdef.tmp"
    stale.write_text("cut short")
    with pytest.raises(RuntimeError):
        with _claim(out):
            assert not stale.exists()
            raise RuntimeError("boom")
    assert runs.read_record(out)["status"] == "failed"
    with pytest.raises(KeyboardInterrupt):
        with _claim(out, resume=True):
            raise KeyboardInterrupt
    assert runs.read_record(out)["status"] == "interrupted"
