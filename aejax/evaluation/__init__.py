"""Evaluation: `metrics` (ELBO, IWAE bounds, posterior diagnostics) over any batch of images."""
