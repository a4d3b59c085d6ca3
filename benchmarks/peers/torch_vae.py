"""Peer: aejax's VAEs in PyTorch, eager or `torch.compile`d, with a plain per-batch loop.

    python -m benchmarks.peers.torch_vae --threads 2 [--mode eager|compile --model mlp|conv --batch-sizes 128
                                                      --device cuda]

Same model, loss (pixel-mean BCE + mean KL / 784) and optimiser (RMSprop lr 1e-3, alpha 0.9, eps
1e-7 outside the square root, as Keras) as aejax; Dense layers Glorot-uniform with zero bias as
aejax, convolutions PyTorch's default initialisation (timing does not depend on it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.peers import protocol


def _dense(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class VAE(nn.Module):
    """The chapter's MLP VAE."""

    def __init__(self):
        super().__init__()
        sizes = (protocol.PIXELS,) + protocol.HIDDEN_SIZES
        self.encoder = nn.ModuleList(_dense(a, b) for a, b in zip(sizes, sizes[1:]))
        self.mean = _dense(sizes[-1], protocol.LATENT_DIM)
        self.log_var = _dense(sizes[-1], protocol.LATENT_DIM)
        sizes = (protocol.LATENT_DIM,) + tuple(reversed(protocol.HIDDEN_SIZES))
        self.decoder = nn.ModuleList(_dense(a, b) for a, b in zip(sizes, sizes[1:]))
        self.logits = _dense(sizes[-1], protocol.PIXELS)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for layer in self.encoder:
            h = F.selu(layer(h))
        return self.mean(h), self.log_var(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.decoder:
            h = F.selu(layer(h))
        return self.logits(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The chapter's loss for a batch (B, 784): pixel-mean BCE + batch-mean KL / 784."""
        mean, log_var = self.encode(x)
        z = mean + torch.exp(log_var / 2) * torch.randn_like(mean)
        bce = F.binary_cross_entropy_with_logits(self.decode_logits(z), x)
        kl = -0.5 * torch.sum(1 + log_var - torch.exp(log_var) - mean.square(), dim=-1)
        return bce + kl.mean() / protocol.PIXELS


class ConvVAE(VAE):
    """aejax's conv VAE (benchmarks/peers/protocol.py), in PyTorch's NCHW layout."""

    def __init__(self):
        nn.Module.__init__(self)
        channels = (1,) + protocol.CHANNELS
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(channels, channels[1:]))
        smallest = protocol.FEATURE_SIDES[-1] ** 2 * channels[-1]
        self.mean = _dense(smallest, protocol.LATENT_DIM)
        self.log_var = _dense(smallest, protocol.LATENT_DIM)
        self.project = _dense(protocol.LATENT_DIM, smallest)
        back = tuple(reversed(channels))
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1) for a, b in zip(back, back[1:])
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.view(-1, 1, protocol.SIDE, protocol.SIDE)
        for conv in self.convs:
            h = F.selu(conv(h))
        h = h.flatten(1)
        return self.mean(h), self.log_var(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        side = protocol.FEATURE_SIDES[-1]
        h = F.selu(self.project(z)).view(-1, protocol.CHANNELS[-1], side, side)
        targets = tuple(reversed(protocol.FEATURE_SIDES[:-1]))
        for i, (deconv, target) in enumerate(zip(self.deconvs, targets)):
            h = deconv(h)[:, :, :target, :target]
            if i < len(self.deconvs) - 1:
                h = F.selu(h)
        return h.flatten(1)


def main() -> None:
    args = protocol.parse_args(__doc__)
    mode = args.mode or "eager"
    if mode not in ("eager", "compile"):
        raise SystemExit(f"--mode must be eager or compile, got {mode!r}")
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        raise SystemExit(f"--device must be cpu or an available cuda, got {args.device!r}")
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    device = torch.device(args.device)
    x = torch.from_numpy(protocol.images(args.num_examples)).to(device)
    records = []
    for batch_size in args.batch_sizes:
        torch.manual_seed(0)
        model = (ConvVAE if args.model == "conv" else VAE)().to(device)
        optimizer = torch.optim.RMSprop(
            model.parameters(), lr=protocol.LEARNING_RATE, alpha=protocol.RHO, eps=protocol.EPSILON
        )
        loss_fn = torch.compile(model) if mode == "compile" else model
        step = torch.compile(optimizer.step) if mode == "compile" else optimizer.step

        def run_epoch():
            order = torch.randperm(args.num_examples, device=device)
            for start in range(0, args.num_examples, batch_size):
                loss = loss_fn(x[order[start : start + batch_size]])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()  # the epoch's kernels have run, not only been queued

        records.append(protocol.time_epochs(run_epoch, args.epochs, args.num_examples, batch_size))
    for record in records:
        record["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    protocol.emit(f"torch_{mode}", f"torch {torch.__version__}", args.threads, records)


if __name__ == "__main__":
    main()
