"""Reference values for tests/loss.rs: the paper's reference formulas (fastssl's BarlowTwinLoss
and VICRegLoss), transcribed to numpy, on small fixed inputs.

    pip install numpy && python3 tools/loss_reference.py
"""
import numpy as np


def off_diag_sq(c):
    return (c ** 2).sum() - (np.diag(c) ** 2).sum()


def barlow(z, k, lam):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)  # the model's F.normalize
    z = (z - z.mean(0)) / z.std(0, ddof=1)
    views = np.split(z, k)
    b = views[0].shape[0]
    if k == 2:
        on = off = 0.0
        for i in range(2):
            c = views[i].T @ views[1 - i] / b
            on += ((np.diag(c) - 1) ** 2).sum()
            off += off_diag_sq(c)
        return (on + lam * off) / 2
    zbar = sum(views) / k
    on = (((np.stack(views) * zbar[None]).mean(1) - 1) ** 2).sum()
    return on / k + lam * off_diag_sq(zbar.T @ zbar / b)


def vicreg(z, k, lam=25.0, mu=25.0, nu=1.0):
    views = np.split(z, k)
    b, d = views[0].shape
    total = sum(views)
    pick = range(1) if k == 2 else range(k)
    repr_ = std_ = cov_ = 0.0
    for i in pick:
        z1, z2 = views[i], (total - views[i]) / (k - 1)
        repr_ += ((z1 - z2) ** 2).mean()
        std_ += np.maximum(0, 1 - z1.std(0, ddof=1)).mean() / 2 + np.maximum(0, 1 - z2.std(0, ddof=1)).mean() / 2
        for x in (z1, z2):
            xc = x - x.mean(0)
            cov_ += off_diag_sq(xc.T @ xc / (b - 1)) / d
    loss = lam * repr_ + mu * std_ + nu * cov_
    return loss if k == 2 else loss / k


def inputs(k, b=4, d=3):
    n = k * b * d
    return np.array([np.sin(0.7 * i + 0.3) + 0.1 * (i % 5) for i in range(n)]).reshape(k * b, d)


# [k * 4, 3] takes the loss's D x D path; [k * 3, 8] (D > 2B) its Gram-matrix path.
for b, d in ((4, 3), (3, 8)):
    for k in (2, 4):
        z = inputs(k, b, d)
        print(f"b={b} d={d} k={k} barlow(lambda=0.5)={float(barlow(z, k, 0.5))!r} "
              f"vicreg={float(vicreg(z, k))!r}")
