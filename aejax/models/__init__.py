"""Models: typed configs plus pure functions over a params pytree; no loops, no I/O.

`vae` (the chapter's MLP VAE), `linear_ae` (the linear autoencoder = PCA), and what they are made
of: `likelihoods` (observation models) and `kernels` (CPU-tuned forms of standard functions).
"""
