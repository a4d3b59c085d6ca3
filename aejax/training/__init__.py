"""Training: `fit` (the population program and its driver), `train` (one scanned epoch, the train
state) and `recipes` (optimisers and learning-rate schedules)."""
