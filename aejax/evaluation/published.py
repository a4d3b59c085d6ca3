"""Published test -log p(x) on dynamically binarized Fashion-MNIST, for aejax's ladder to stand beside.

The Exemplar-VAE paper's density table (Norouzi, Fleet & Norouzi 2020, arXiv 2004.04795;
`images/density_estimation.png` in sajadn/Exemplar-VAE): 40-D latents, 300 hidden units, IWAE
with 5,000 samples over the test set. Its ± is over the paper's runs (None where it gives one
run). aejax's `conv_hvae` plays the role of the paper's ConvHVAE with a smaller decoder
(docs/ladder.md). No Fashion-MNIST entry exists for a model trained on the IWAE bound.
"""

from __future__ import annotations

SOURCE = "Exemplar-VAE (arXiv 2004.04795), dynamically binarized Fashion-MNIST"
K = 5000  # the importance samples behind every value below

# (model, prior) -> (test -log p(x) in nats, its ± over runs or None)
FASHION_MNIST_NLL: dict[tuple[str, str], tuple[float, float | None]] = {
    ("mlp", "standard"): (228.70, 0.15),
    ("mlp", "vamp"): (227.35, 0.05),
    ("hvae", "standard"): (227.37, None),
    ("hvae", "vamp"): (226.72, None),
    ("conv_hvae", "standard"): (225.38, None),
    ("conv_hvae", "vamp"): (224.67, None),
}


def fashion_mnist_nll(model: str, prior: str, objective: str = "elbo") -> tuple[float, float | None] | None:
    """The published (nats, ± or None) for a model trained on the ELBO with `prior`, or None if the table has none."""
    return FASHION_MNIST_NLL.get((model, prior)) if objective == "elbo" else None
