"""The numbers of evaluation, computed from feature matrices (rows are images), in float64.

- cosine similarity to the references (CLIP-I, DINO: the DreamBooth paper's metrics);
- consistency: the share of images at least as close to the references as the references are to
  each other (leave-one-out threshold, defined in `consistency_threshold`);
- diversity: mean pairwise cosine distance of a set's features;
- FID (Heusel et al. 2017), the Fréchet distance between Gaussians fitted to Inception features;
- KID (Bińkowski et al. 2018), the unbiased MMD² with the cubic polynomial kernel, over subsets;
- CMMD (Jayasumana et al. 2024, "Rethinking FID"), MMD² with a Gaussian RBF kernel (σ = 10) on
  unit CLIP embeddings, ×1000.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
"""torch-fidelity's and clean-fid's defaults: 100 subsets of at most 1,000 images each."""
CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
"""The CMMD paper's kernel bandwidth and its scale (to make the numbers readable)."""


def _f64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    import torch

    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)


def mean_cosine(features: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """Per row of `features`: its mean cosine to every reference (inputs are unit vectors)."""
    return (_f64(features) @ _f64(references).T).mean(axis=1)


def leave_one_out(references: torch.Tensor) -> np.ndarray:
    """Per reference: its mean cosine to the other references (unit vectors; needs two or more)."""
    refs = _f64(references)
    n = len(refs)
    if n < 2:
        raise ValueError("leave-one-out similarity needs at least 2 reference images")
    sims = refs @ refs.T
    return (sims.sum(axis=1) - np.diag(sims)) / (n - 1)


@dataclass(frozen=True)
class Threshold:
    value: float
    """The lowest leave-one-out similarity among the references."""
    references: int
    mean: float
    """The references' mean leave-one-out similarity, for orientation."""


def consistency_threshold(references: torch.Tensor) -> Threshold:
    """How close an image must be to the references to count as consistent with them.

    Each reference is compared with the others (leave-one-out: its mean cosine to the rest), and the
    threshold is the lowest of those: every reference clears it, so a set of new photos of the subject
    as varied as the references would score close to 100 %, while an image further from the
    references than any of them is from the rest does not count. With few or very varied references
    the threshold is low and consistency is easy; with near-identical ones it is strict.
    """
    loo = leave_one_out(references)
    return Threshold(float(loo.min()), len(loo), float(loo.mean()))


def consistent(similarities: np.ndarray | list[float], threshold: Threshold) -> list[bool]:
    """Per image: its similarity to the references (mean cosine) is at least the threshold."""
    return [bool(s >= threshold.value - 1e-12) for s in similarities]


def diversity(features: torch.Tensor) -> float:
    """Mean pairwise cosine distance (1 − cos) over all pairs of a set of unit vectors; 0 = identical."""
    x = _f64(features)
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least 2 images")
    sims = x @ x.T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), with Tr (Σ1 Σ2)^½ from the eigenvalues of the symmetric
    Σ1^½ Σ2 Σ1^½ (the same spectrum, numerically safe for the singular covariances of small sets)."""
    mu1, mu2, sigma1, sigma2 = map(np.asarray, (mu1, mu2, sigma1, sigma2))
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """FID between two sets of features (rows), with the unbiased (n − 1) covariances.

    When a set has fewer images than features (always, for a training set against 2,048 Inception
    features) the covariances have low rank and Tr (Σa Σb)^½ is the nuclear norm of Xa Xbᵀ / √((na−1)(nb−1))
    for the centred features X: exact, and an na × nb problem instead of a 2048 × 2048 one.
    """
    x, y = _f64(a), _f64(b)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("FID needs at least 2 images in each set")
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    if min(len(x), len(y)) > x.shape[1]:
        return frechet_distance_from_stats(mu_x, np.cov(x, rowvar=False), mu_y, np.cov(y, rowvar=False))
    xc, yc = x - mu_x, y - mu_y
    nx, ny = len(x) - 1, len(y) - 1
    cross = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt(nx * ny)
    return float(((mu_x - mu_y) ** 2).sum() + (xc ** 2).sum() / nx + (yc ** 2).sum() / ny - 2 * cross)


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """The unbiased MMD² estimate from kernel matrices: the diagonals of Kxx and Kyy left out."""
    m, n = len(kxx), len(kyy)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel: (xᵀy / d + 1)³."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


@dataclass(frozen=True)
class KID:
    mean: float
    std: float
    subsets: int
    subset_size: int


def kernel_inception_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *,
                              subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> KID:
    """KID: the unbiased MMD² with the polynomial kernel, averaged over `subsets` random subsets of
    min(subset_size, na, nb) images of each set (a fixed seed, so the same sets give the same number).
    With one subset as large as both sets it is the plain unbiased estimate."""
    x, y = _f64(a), _f64(b)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        xs = x[rng.choice(len(x), size, replace=False)]
        ys = y[rng.choice(len(y), size, replace=False)]
        values.append(mmd2_unbiased(polynomial_kernel(xs, xs), polynomial_kernel(ys, ys), polynomial_kernel(xs, ys)))
    return KID(float(np.mean(values)), float(np.std(values)), subsets, size)


def cmmd(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, sigma: float = CMMD_SIGMA,
         scale: float = CMMD_SCALE) -> float:
    """CMMD as its paper's code computes it: scale × (mean Kxx + mean Kyy − 2 mean Kxy) for the Gaussian RBF
    kernel exp(−‖x − y‖² / 2σ²) on unit CLIP embeddings, diagonals included."""
    x, y = _f64(a), _f64(b)
    if not len(x) or not len(y):
        raise ValueError("CMMD needs at least 1 image in each set")
    gamma = 1.0 / (2 * sigma ** 2)

    def kernel(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        distances = (p ** 2).sum(1)[:, None] + (q ** 2).sum(1)[None, :] - 2 * p @ q.T
        return np.exp(-gamma * distances)

    return float(scale * (kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()))
