"""Host-side bookkeeping of a population's training, one entry per member: the history,
divergence, early stopping and the KL warm-up, and the state a checkpoint keeps of them."""

from __future__ import annotations

import numpy as np


class Tracker:
    """Host-side bookkeeping per member: history, divergence, early stopping, KL warm-up."""

    def __init__(self, size: int, patience: int | None, warmup: int):
        self.size, self.patience, self.warmup = size, patience, warmup
        self.history: dict[str, list[list[float | None]]] = {}
        self.diverged: list[dict | None] = [None] * size
        self.best_val = [float("inf")] * size
        self.best_epoch = [0] * size
        self.since_best = [0] * size
        self.stopped_after: list[int | None] = [None] * size  # epochs trained when a member stopped
        self.improved = [False] * size
        self.newly_diverged = False
        self.seconds_total, self.invocations = 0.0, 1  # over every call that trained this run

    def kl_weight(self, epoch: int) -> float:
        return 1.0 if self.warmup == 0 else min(1.0, (epoch + 1) / self.warmup)

    def active(self, i: int) -> bool:
        return self.stopped_after[i] is None

    def all_stopped(self) -> bool:
        return not any(self.active(i) for i in range(self.size))

    def all_diverged(self) -> bool:
        return all(d is not None for d in self.diverged)

    def record(self, epoch: int, train: dict, val: dict) -> list[dict]:
        names = ["loss"] + [f"val_{k}" for k in val]
        values = {"loss": train["loss"], **{f"val_{k}": v for k, v in val.items()}}
        self.newly_diverged, self.improved = False, [False] * self.size
        records = []
        for i in range(self.size):
            active = self.active(i)
            if active and (
                train["first_nonfinite_step"][i] >= 0
                or not np.isfinite(values["loss"][i])
                or not np.isfinite(values["val_loss"][i])
            ):
                self.diverged[i] = {"epoch": epoch + 1, "step": int(train["first_nonfinite_step"][i])}
                self.stopped_after[i], active, self.newly_diverged = epoch + 1, False, True
            row = {name: float(values[name][i]) if active else None for name in names}
            if active and self.patience:
                if row["val_loss"] < self.best_val[i]:
                    self.best_val[i], self.best_epoch[i], self.since_best[i] = row["val_loss"], epoch + 1, 0
                    self.improved[i] = True
                elif epoch + 1 > self.warmup:
                    self.since_best[i] += 1
                if self.since_best[i] >= self.patience:
                    self.stopped_after[i] = epoch + 1
            records.append({"epoch": epoch + 1, "member": i, **row})
        for name in names:
            self.history.setdefault(name, []).append([r[name] for r in records])
        return records

    def epochs_trained(self, start: int, end: int) -> list[int]:
        return [max(0, (min(end, s) if s is not None else end) - start) for s in self.stopped_after]

    def postfix(self) -> dict[str, str]:
        last = {k: [v for v in rows[-1] if v is not None] for k, rows in self.history.items()}
        shown = {k: f"{np.mean(v):.4f}" for k, v in last.items() if k in ("loss", "val_loss") and v}
        if self.size > 1:
            shown["active"] = f"{sum(self.active(i) for i in range(self.size))}/{self.size}"
        return shown

    def history_arrays(self) -> dict[str, np.ndarray]:
        return {
            k: np.asarray([[np.nan if v is None else v for v in row] for row in rows], np.float64).T
            for k, rows in self.history.items()
        }

    def to_json(self, seconds_now: float = 0.0) -> dict:
        """The state a checkpoint keeps; `seconds_now`: this call's training time so far."""
        return {
            "history": self.history,
            "diverged": self.diverged,
            "best_val": _nan_to_none(self.best_val),
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "stopped_after": self.stopped_after,
            "seconds_total": self.seconds_total + seconds_now,
            "invocations": self.invocations,
        }

    @classmethod
    def from_json(cls, state: dict, patience: int | None, warmup: int) -> "Tracker":
        tracker = cls(len(state["diverged"]), patience, warmup)
        tracker.history, tracker.diverged = state["history"], state["diverged"]
        tracker.best_val = [float("inf") if v is None else v for v in state["best_val"]]
        tracker.best_epoch, tracker.since_best = state["best_epoch"], state["since_best"]
        tracker.stopped_after = state["stopped_after"]
        # Checkpoints older than these fields count as one earlier call of unknown length.
        tracker.seconds_total = state.get("seconds_total", 0.0)
        tracker.invocations = state.get("invocations", 1) + 1
        return tracker


def _nan_to_none(values) -> list:
    return [None if not np.isfinite(v) else float(v) for v in values]
