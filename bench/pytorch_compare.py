#!/usr/bin/python3
"""The shipped models of `pae-bench` written in PyTorch, for back-to-back throughput comparisons.

    OPENBLAS_NUM_THREADS=1 bench/pytorch_compare.py vae|ae|realnvp|nsf [--threads N] [--epochs N] [--limit N]

Same architectures, initial layouts, batch sizes, optimizer (Adam 1e-3) and data as
`pae-bench vae|ae|realnvp|nsf`: the Fashion-MNIST training images (60,000; `--limit` takes the first N)
for the auto-encoders, 51,200 correlated Gaussian samples in 32 dimensions for the flows. Prints one
JSON line with the best epoch's images (samples) per second, as `pae-bench` does. Plain, idiomatic
PyTorch: the loop a researcher writes (shuffle, index, forward, backward, Adam step). Run it with
Debian's PyTorch (`apt-get install python3-torch`, the same 1.13 LibTorch pae links), OpenBLAS
threads set in the environment before the interpreter starts.
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def fashion_mnist(limit):
    root = os.environ.get("PAE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
    with gzip.open(os.path.join(root, "train-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    x = torch.from_numpy(raw.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    return x[:limit] if limit > 0 else x


class VAE(nn.Module):
    """configs/fmnist_vae.yml: MLP 784-400-20, ReLU, Bernoulli likelihood, analytic KL."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
        self.dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784), nn.Unflatten(1, (1, 28, 28)))

    def loss(self, x):
        mu, logvar = self.enc(x).chunk(2, 1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.dec(z)
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return nll.mean() + kl.mean()


class ConvAE(nn.Module):
    """configs/fmnist_ae.yml: stride-2 convs 32-64-128 (kernel 3, batch norm), latent 32, mirrored
    transposed convs, MSE on the sigmoid."""

    def __init__(self, k=3, channels=(32, 64, 128), latent=32):
        super().__init__()
        p = (k - 1) // 2
        sizes = [28]
        for _ in channels:
            sizes.append((sizes[-1] + 2 * p - k) // 2 + 1)
        enc, cin = [], 1
        for ch in channels:
            enc += [nn.Conv2d(cin, ch, k, 2, p, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
            cin = ch
        enc += [nn.Flatten(), nn.Linear(cin * sizes[-1] ** 2, latent)]
        self.enc = nn.Sequential(*enc)
        dec = [nn.Linear(latent, channels[-1] * sizes[-1] ** 2), nn.ReLU(),
               nn.Unflatten(1, (channels[-1], sizes[-1], sizes[-1]))]
        for i in reversed(range(len(channels))):
            out = 1 if i == 0 else channels[i - 1]
            op = sizes[i] - ((sizes[i + 1] - 1) * 2 - 2 * p + k)
            last = i == 0
            dec.append(nn.ConvTranspose2d(channels[i], out, k, 2, p, output_padding=op, bias=last))
            if not last:
                dec += [nn.BatchNorm2d(out), nn.ReLU()]
        self.dec = nn.Sequential(*dec)

    def loss(self, x):
        return F.mse_loss(torch.sigmoid(self.dec(self.enc(x))), x)


class Conditioner(nn.Module):
    def __init__(self, n_in, n_out, hidden=256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_out))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x):
        return self.net(x)


def rational_quadratic(x, uw, uh, ud, bound=3.0, min_w=1e-3, min_h=1e-3, min_d=1e-3):
    """Forward rational-quadratic spline (Durkan et al. 2019) on [-bound, bound], identity outside:
    values and log|dy/dx|, element-wise; uw, uh: [..., K], ud: [..., K-1]."""
    k = uw.shape[-1]
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)

    def knots(u, m):
        s = min_w if m == "w" else min_h
        p = s + (1 - s * k) * torch.softmax(u, -1)
        c = F.pad(torch.cumsum(p, -1), (1, 0)) * 2 * bound - bound
        return torch.cat([torch.full_like(c[..., :1], -bound), c[..., 1:-1], torch.full_like(c[..., :1], bound)], -1)

    cw, ch = knots(uw, "w"), knots(uh, "h")
    edge = math.log(math.expm1(1 - min_d))
    d = min_d + F.softplus(F.pad(ud, (1, 1), value=edge))
    idx = ((xc.unsqueeze(-1) >= cw).sum(-1, keepdim=True) - 1).clamp(0, k - 1)
    xk, yk = cw.gather(-1, idx)[..., 0], ch.gather(-1, idx)[..., 0]
    wk = cw.gather(-1, idx + 1)[..., 0] - xk
    hk = ch.gather(-1, idx + 1)[..., 0] - yk
    dk, dk1 = d.gather(-1, idx)[..., 0], d.gather(-1, idx + 1)[..., 0]
    s = hk / wk
    theta = ((xc - xk) / wk).clamp(0, 1)
    t1t = theta * (1 - theta)
    den = s + (dk + dk1 - 2 * s) * t1t
    y = yk + hk * (s * theta.pow(2) + dk * t1t) / den
    dnum = s.pow(2) * (dk1 * theta.pow(2) + 2 * s * t1t + dk * (1 - theta).pow(2))
    logdet = torch.log(dnum) - 2 * torch.log(den)
    return torch.where(inside, y, x), torch.where(inside, logdet, torch.zeros_like(logdet))


class Flow(nn.Module):
    """`pae-bench nsf|realnvp`: 8 couplings (2x256 ReLU conditioners, last layer zero) on dimension 32,
    the second half transformed given the first, reversals between couplings; 8 bins, tail bound 3."""

    def __init__(self, kind, dim=32, layers=8, bins=8):
        super().__init__()
        self.kind, self.dim, self.half, self.bins = kind, dim, dim // 2, bins
        self.per = 2 if kind == "realnvp" else 3 * bins - 1
        nt = dim - self.half
        self.cond = nn.ModuleList(Conditioner(self.half, nt * self.per) for _ in range(layers))
        if kind == "nsf":  # identity at initialisation: unit interior derivatives
            with torch.no_grad():
                for c in self.cond:
                    c.net[-1].bias.view(-1, self.per)[:, 2 * bins:] = math.log(math.expm1(1 - 1e-3))

    def log_prob(self, x):
        logdet = torch.zeros(x.shape[0], device=x.device)
        for i, c in enumerate(self.cond):
            xi, xt = x[:, :self.half], x[:, self.half:]
            p = c(xi).view(x.shape[0], -1, self.per)
            if self.kind == "realnvp":
                log_s = 3 * torch.tanh(p[..., 1] / 3)
                yt, ld = xt * torch.exp(log_s) + p[..., 0], log_s
            else:
                k = self.bins
                yt, ld = rational_quadratic(xt, p[..., :k], p[..., k:2 * k], p[..., 2 * k:])
            x = torch.cat([xi, yt], 1)
            logdet = logdet + ld.sum(1)
            if i + 1 < len(self.cond):
                x = x.flip(1)
        return -0.5 * (x.pow(2).sum(1) + self.dim * math.log(2 * math.pi)) + logdet

    def loss(self, x):
        return -self.log_prob(x).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["vae", "ae", "realnvp", "nsf"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = all cores)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="first N training images only (0 = all)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (data and model there, as pae-bench --device)")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.set_num_threads(a.threads if a.threads > 0 else os.cpu_count())
    torch.manual_seed(0)
    if a.what in ("vae", "ae"):
        data, batch = fashion_mnist(a.limit), 128
        model = VAE() if a.what == "vae" else ConvAE()
    else:
        n, d, batch = 51200, 32, 256
        data = torch.randn(n, d) @ (torch.randn(d, d) / math.sqrt(d))
        model = Flow(a.what)
    data, model = data.to(device), model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    best, last = 0.0, float("nan")
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(data.shape[0], device=device)
        for i in range(0, data.shape[0], batch):
            x = data[perm[i:i + batch]]
            loss = model.loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        last = loss.item()  # waits for the device's queue: the epoch's work is done
        best = max(best, data.shape[0] / (time.perf_counter() - t0))
    print(json.dumps({"model": a.what, "framework": "pytorch " + torch.__version__, "device": str(device),
                      "per_s": round(best, 1),
                      "threads": torch.get_num_threads(),
                      "blas_threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")), "last_loss": last}))


if __name__ == "__main__":
    main()
