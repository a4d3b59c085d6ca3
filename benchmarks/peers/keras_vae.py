"""Peer: aejax's VAEs in Keras 3, trained by `model.fit` exactly as the book does.

    python -m benchmarks.peers.keras_vae --threads 2 [--mode tensorflow|jax --model mlp|conv --batch-sizes 128]

`--mode` picks the Keras backend (default tensorflow, the chapter's). Epoch times come from a
callback around each epoch of one `fit` call; the first epoch (tracing/compiling) is the warm-up.
"""

from __future__ import annotations

import os
import time

from benchmarks.peers import protocol


def build_model(keras, model: str = "mlp"):
    """A functional VAE as the chapter writes them: sigmoid outputs, BCE loss, KL / 784 added with
    add_loss; `model` "mlp" (the chapter's) or "conv" (benchmarks/peers/protocol.py)."""
    layers, ops = keras.layers, keras.ops

    class Sampling(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(42)

        def call(self, inputs):
            mean, log_var = inputs
            eps = keras.random.normal(ops.shape(log_var), seed=self.seed_generator)
            return mean + ops.exp(log_var / 2) * eps

    class LatentLoss(layers.Layer):
        """Identity on (mean, log_var) that adds the chapter's mean KL / 784 to the model's loss."""

        def call(self, inputs):
            mean, log_var = inputs
            kl = -0.5 * ops.sum(1 + log_var - ops.exp(log_var) - ops.square(mean), axis=-1)
            self.add_loss(ops.mean(kl) / protocol.PIXELS)
            return mean, log_var

    inputs = keras.Input(shape=(protocol.PIXELS,))
    h = inputs
    if model == "conv":
        h = layers.Reshape((protocol.SIDE, protocol.SIDE, 1))(h)
        for channels in protocol.CHANNELS:
            h = layers.Conv2D(channels, 3, strides=2, padding="same", activation="selu")(h)
        h = layers.Flatten()(h)
    else:
        for size in protocol.HIDDEN_SIZES:
            h = layers.Dense(size, activation="selu")(h)
    mean = layers.Dense(protocol.LATENT_DIM)(h)
    log_var = layers.Dense(protocol.LATENT_DIM)(h)
    mean, log_var = LatentLoss()([mean, log_var])
    h = Sampling()([mean, log_var])
    if model == "conv":
        side = protocol.FEATURE_SIDES[-1]
        h = layers.Dense(side * side * protocol.CHANNELS[-1], activation="selu")(h)
        h = layers.Reshape((side, side, protocol.CHANNELS[-1]))(h)
        back = (*reversed(protocol.CHANNELS[:-1]), 1)
        for i, (channels, target) in enumerate(zip(back, reversed(protocol.FEATURE_SIDES[:-1]))):
            h = layers.Conv2DTranspose(channels, 3, strides=2, padding="same")(h)
            h = layers.Cropping2D(((0, h.shape[1] - target), (0, h.shape[2] - target)))(h)
            h = layers.Activation("selu" if i < len(back) - 1 else "sigmoid")(h)
        outputs = layers.Flatten()(h)
    else:
        for size in reversed(protocol.HIDDEN_SIZES):
            h = layers.Dense(size, activation="selu")(h)
        outputs = layers.Dense(protocol.PIXELS, activation="sigmoid")(h)
    vae = keras.Model(inputs, outputs)
    vae.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.RMSprop(protocol.LEARNING_RATE, rho=protocol.RHO, epsilon=protocol.EPSILON),
    )
    return vae


def main() -> None:
    args = protocol.parse_args(__doc__)
    if args.device != "cpu":
        raise SystemExit(f"--device: the Keras peer runs on the CPU only, got {args.device!r}")
    backend = args.mode or "tensorflow"
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    x = protocol.images(args.num_examples)
    records = []
    for batch_size in args.batch_sizes:
        keras.utils.set_random_seed(0)
        timer = EpochTimer()
        timer.seconds = []
        build_model(keras, args.model).fit(
            x, x, epochs=args.epochs + 1, batch_size=batch_size, callbacks=[timer], verbose=0
        )
        records.append(protocol.record(batch_size, args.num_examples, timer.seconds[0], timer.seconds[1:]))
    protocol.emit(f"keras_{backend}_fit", f"keras {keras.__version__} ({backend})", args.threads, records)


if __name__ == "__main__":
    main()
