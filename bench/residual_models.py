#!/usr/bin/env python3
"""Residual models for the PAE's data-likelihood OoD score, compared on the same images.

    build/pae-residuals --ae-run RUN --flow FLOW --out DIR fashion-mnist:val fashion-mnist:test \
        mnist:test noise constant
    bench/residual_models.py DIR [--in fashion-mnist_test] [--fit fashion-mnist_val]

The score is -(log p(z) + log p(x | decoder(z))); pae-eval ood's neg_log_p_x uses a Gaussian
with a per-pixel sigma measured on held-out images (clamped at 1e-3). Each residual model here is
fitted on the --fit set's residuals and the AUROC (OoD = positive) against every other set is
printed, with the weight on the residual term that a score would need to keep log p(z)'s AUROC.
Needs numpy (Debian's python3-numpy).
"""
import argparse
import glob
import math
import os

import numpy as np


def auroc(inside, outside):
    """Mann-Whitney U / (n_in n_out), ties one half: pae's metric."""
    s = np.concatenate([inside, outside])
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return (ranks[len(inside):].sum() - len(outside) * (len(outside) + 1) / 2) / (len(inside) * len(outside))


def load(d, name, images=False):
    x = np.load(os.path.join(d, f"{name}_x.npy")).astype(np.float64)
    r = np.load(os.path.join(d, f"{name}_recon.npy")).astype(np.float64)
    lpz = np.load(os.path.join(d, f"{name}_log_p_z.npy"))
    return (x, r, lpz) if images else (x - r, lpz)


def gaussian_full(res, shrink, ridge):
    """N(mean, (1 - shrink) S + shrink diag(S) + ridge I), S the residuals' covariance."""
    mu, s = res.mean(0), np.cov(res.T)
    c = (1 - shrink) * s + shrink * np.diag(np.diag(s)) + ridge * np.eye(len(mu))
    chol = np.linalg.cholesky(c)
    half_logdet = np.log(np.diag(chol)).sum()

    def nll(r):
        y = np.linalg.solve(chol, (r - mu).T)
        return 0.5 * (y ** 2).sum(0) + half_logdet
    return nll


def hetero(fit_x, fit_recon, bins=10):
    """Heteroscedastic: sigma a function of the decoded image, per (decoded value, edge strength)
    bin of each pixel (bins x bins cells, RMS residual of the fit set's pixels in each cell)."""
    def cells(recon):
        im = recon.reshape(len(recon), 28, 28)
        gx, gy = np.zeros_like(im), np.zeros_like(im)
        gx[:, :, 1:-1] = im[:, :, 2:] - im[:, :, :-2]
        gy[:, 1:-1, :] = im[:, 2:, :] - im[:, :-2, :]
        g = np.sqrt(gx ** 2 + gy ** 2).reshape(len(recon), -1)
        v = np.clip((recon * bins).astype(int), 0, bins - 1)
        e = np.clip((g * bins).astype(int), 0, bins - 1)
        return v * bins + e
    c, r2 = cells(fit_recon), (fit_x - fit_recon) ** 2
    var = np.array([r2[c == k].mean() if (c == k).sum() > 50 else r2.mean() for k in range(bins * bins)])
    var = np.maximum(var, 1e-6)

    def nll(x, recon):
        v = var[cells(recon)]
        return 0.5 * ((x - recon) ** 2 / v).sum(1) + 0.5 * np.log(v).sum(1)
    return nll


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--in", dest="inside", default="fashion-mnist_test")
    ap.add_argument("--fit", default="fashion-mnist_val")
    a = ap.parse_args()
    fit, fit_lpz = load(a.dir, a.fit)
    inside = load(a.dir, a.inside)
    others = sorted(os.path.basename(p)[:-6] for p in glob.glob(os.path.join(a.dir, "*_x.npy")))
    others = [o for o in others if o not in (a.fit, a.inside)]
    sets = {o: load(a.dir, o) for o in others}

    sigma = np.sqrt((fit ** 2).mean(0)).clip(1e-3)
    d = fit.shape[1]

    def diag(s):
        return lambda r: 0.5 * ((r / s) ** 2).sum(1) + np.log(s).sum()
    q = lambda r: ((r / sigma) ** 2).sum(1)
    q_fit = q(fit)
    nus = [1, 2, 4, 8, 16, 32, 64, 128, 1e3, 1e4]

    def t_nll(qq, nu):
        return -(math.lgamma((nu + d) / 2) - math.lgamma(nu / 2) - 0.5 * d * math.log(nu)) + 0.5 * (nu + d) * np.log1p(qq / nu)
    nu = min(nus, key=lambda v: t_nll(q_fit, v).mean())
    models = [
        ("none: log p(z) only", lambda r: np.zeros(len(r))),
        ("per-pixel sigma (pae-eval ood's neg_log_p_x)", diag(sigma)),
        ("per-pixel sigma, floor 0.01", diag(np.sqrt(sigma ** 2 + 0.01 ** 2))),
        ("per-pixel sigma, floor 0.03", diag(np.sqrt(sigma ** 2 + 0.03 ** 2))),
        ("one sigma for all pixels", diag(np.full(d, np.sqrt((fit ** 2).mean())))),
        (f"Student-t scale mixture of the per-pixel Gaussian (nu = {nu:g}, fitted)", lambda r: 0.5 * (nu + d) * np.log1p(q(r) / nu)),
        ("full covariance + 1e-4 I", gaussian_full(fit, 0, 1e-4)),
        ("full covariance + 1e-3 I", gaussian_full(fit, 0, 1e-3)),
        ("full covariance + 1e-2 I", gaussian_full(fit, 0, 1e-2)),
        ("covariance shrunk halfway to its diagonal", gaussian_full(fit, 0.5, 1e-6)),
    ]
    print(f"residual models fitted on {a.fit} ({len(fit)} images); in = {a.inside}; AUROC of -(log p(z) + log p(x | z))")
    print("| residual model | " + " | ".join(others) + " |")
    print("| --- |" + " --- |" * len(others))
    for name, nll in models:
        base = nll(inside[0]) - inside[1]
        cells = [f"{auroc(base, nll(r) - lpz):.4f}" for r, lpz in sets.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    # Heteroscedastic (needs the images, not only the residuals; 28 x 28 single-channel images).
    if fit.shape[1] == 784:
        fx, fr, _ = load(a.dir, a.fit, images=True)
        het = hetero(fx, fr)
        ix, ir, ilpz = load(a.dir, a.inside, images=True)
        base = het(ix, ir) - ilpz
        cells = []
        for o in others:
            x, r, lpz = load(a.dir, o, images=True)
            cells.append(f"{auroc(base, het(x, r) - lpz):.4f}")
        print("| heteroscedastic: sigma per (decoded value, edge strength) cell, 10 x 10 | " + " | ".join(cells) + " |")

    # Not a likelihood: each term's tail probability under the fit set (empirical, +1 smoothed),
    # combined by Fisher's method, -log p_z - log p_residual.
    def tail(ref):
        ref = np.sort(ref)
        return lambda v: -np.log((len(ref) - np.searchsorted(ref, v, side="left") + 1) / (len(ref) + 1))
    t_z, t_r = tail(-fit_lpz), tail(diag(sigma)(fit))
    fisher = lambda r, lpz: t_z(-lpz) + t_r(diag(sigma)(r))
    cells = [f"{auroc(fisher(*inside), fisher(r, lpz)):.4f}" for r, lpz in sets.values()]
    print("\nFisher's combination of the two tail probabilities (not a likelihood): " + ", ".join(
        f"{o} {c}" for o, c in zip(others, cells)))
    # The weight w on the per-pixel Gaussian's residual term: -(log p(z)) + w * residual nll.
    res_in = diag(sigma)(inside[0])
    print("\n| weight on the per-pixel residual term | " + " | ".join(others) + " |")
    print("| --- |" + " --- |" * len(others))
    for w in [0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1]:
        cells = [f"{auroc(-inside[1] + w * res_in, -lpz + w * diag(sigma)(r)):.4f}" for r, lpz in sets.values()]
        print(f"| {w:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
