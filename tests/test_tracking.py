"""The host-side tracker: early stopping, the KL warm-up, divergence, and what a checkpoint keeps."""

import json

import numpy as np

from aejax.training import tracking


def _epoch(tracker, epoch, losses, first_nonfinite=(-1,)):
    train = {"loss": np.asarray(losses), "first_nonfinite_step": np.asarray(first_nonfinite)}
    return tracker.record(epoch, train, {"loss": np.asarray(losses)})


def test_tracker_counts_patience_after_the_kl_warmup():
    tracker = tracking.Tracker(1, patience=2, warmup=3)
    val = [0.9, 1.0, 1.1, 1.2, 1.3, 0.5]
    for epoch, loss in enumerate(val):
        _epoch(tracker, epoch, [loss])
        if not tracker.active(0):
            break
    # Epochs 2 and 3 are inside the warm-up; epochs 4 and 5 exhaust the patience of 2.
    assert tracker.best_epoch == [1] and tracker.stopped_after == [5]
    assert [tracker.kl_weight(e) for e in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]


def test_a_diverged_member_stops_alone_and_the_state_survives_a_checkpoint():
    tracker = tracking.Tracker(2, patience=3, warmup=0)
    _epoch(tracker, 0, [0.8, 0.7], first_nonfinite=(-1, -1))
    records = _epoch(tracker, 1, [0.6, float("nan")], first_nonfinite=(-1, 4))
    assert tracker.newly_diverged and tracker.diverged == [None, {"epoch": 2, "step": 4}]
    assert records[1]["loss"] is None and records[0]["loss"] == 0.6  # the diverged member's values are dropped
    assert not tracker.all_diverged() and tracker.active(0) and not tracker.active(1)
    restored = tracking.Tracker.from_json(json.loads(json.dumps(tracker.to_json(12.5))), patience=3, warmup=0)
    assert (restored.history, restored.diverged, restored.best_epoch) == (
        tracker.history,
        tracker.diverged,
        tracker.best_epoch,
    )
    assert restored.seconds_total == 12.5 and restored.invocations == 2
    np.testing.assert_array_equal(restored.history_arrays()["val_loss"], [[0.8, 0.6], [0.7, np.nan]])
