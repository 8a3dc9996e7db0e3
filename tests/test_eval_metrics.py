"""FID, KID, CMMD, diversity and the consistency threshold, each checked against a direct computation:
closed forms for known Gaussians, plain double loops, and the estimators' known properties (FID of a set
against itself is 0, KID is unbiased, CMMD of identical sets is 0). The Inception network matches
pytorch-fid's own; its download fails offline with a message that says what to do."""

from __future__ import annotations

import math
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from studio.eval import inception
from studio.eval.backbones import BackboneError
from studio.eval.metrics import (cmmd, consistency_threshold, diversity, frechet_distance, frechet_distance_from_stats,
                                 kernel_inception_distance, leave_one_out, mmd2_unbiased, polynomial_kernel)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- FID -----------------------------------------------------------------------------------------

def test_fid_of_a_set_against_itself_is_zero_on_both_paths():
    rng = np.random.default_rng(0)
    few = rng.normal(size=(12, 64))  # fewer images than features: the low-rank path
    many = rng.normal(size=(300, 8))  # more images than features: the covariance path
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(many, many) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_two_known_gaussians_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    # diagonal covariances: Tr (Σ1 Σ2)^½ = Σ √(s1 s2)
    closed = ((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum()
    assert frechet_distance_from_stats(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(closed, abs=1e-10)
    # full covariances: the textbook formula with scipy's matrix square root
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + np.eye(5), b @ b.T + 0.1 * np.eye(5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    textbook = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance_from_stats(m1, s1, m2, s2) == pytest.approx(textbook, rel=1e-8)
    # samples of the two Gaussians converge to the closed form
    x = rng.normal(size=(200_000, 3)) * np.sqrt(var1) + mu1
    y = rng.normal(size=(200_000, 3)) * np.sqrt(var2) + mu2
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.02)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_the_low_rank_path_equals_the_covariance_formula_and_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 40)), rng.normal(size=(14, 40)) * 1.5 + 0.3
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    low_rank = frechet_distance(x, y)
    assert low_rank == pytest.approx(frechet_distance_from_stats(mx, sx, my, sy), rel=1e-7)
    assert low_rank == pytest.approx(calculate_frechet_distance(mx, sx, my, sy), rel=1e-4)


def test_fid_needs_two_images_per_set():
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


# --- KID -----------------------------------------------------------------------------------------

def test_kid_with_one_full_subset_is_the_unbiased_mmd_computed_by_hand():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 6)), rng.normal(size=(7, 6)) + 0.5
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    kid = kernel_inception_distance(x, y, subsets=1, subset_size=m)
    assert kid.mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and kid.std == 0 and kid.subset_size == 7


def test_kid_is_unbiased_where_the_plain_estimate_is_not():
    """Two samples of one distribution: the unbiased MMD² averages to 0 over many draws; the V-statistic
    (diagonals kept) sits clearly above it."""
    rng = np.random.default_rng(4)
    unbiased, biased = [], []
    for _ in range(400):
        x, y = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
        kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        unbiased.append(mmd2_unbiased(kxx, kyy, kxy))
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    error = np.std(unbiased) / math.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * error
    assert np.mean(biased) > 10 * error
    # and a fixed sample gives a fixed number (subsets drawn with a fixed seed)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(25, 5))
    assert kernel_inception_distance(x, y, subsets=20, subset_size=10) == \
        kernel_inception_distance(x, y, subsets=20, subset_size=10)


# --- CMMD, diversity, consistency ------------------------------------------------------------------

def test_cmmd_is_the_papers_scaled_gaussian_mmd_computed_by_hand():
    rng = np.random.default_rng(5)
    x, y = _unit(rng.normal(size=(6, 4))), _unit(rng.normal(size=(5, 4)) + 1.0)

    def k(a, b):
        return math.exp(-((a - b) ** 2).sum() / (2 * 10.0 ** 2))

    def mean_k(p, q):
        return sum(k(a, b) for a in p for b in q) / (len(p) * len(q))

    by_hand = 1000 * (mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y))
    assert cmmd(x, y) == pytest.approx(by_hand, rel=1e-9)
    assert cmmd(x, x) == pytest.approx(0.0, abs=1e-9) and by_hand > 0


def test_diversity_and_the_consistency_threshold_by_hand():
    rng = np.random.default_rng(6)
    x = _unit(rng.normal(size=(5, 3)))
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    assert diversity(torch.tensor(x)) == pytest.approx(np.mean([1 - x[i] @ x[j] for i, j in pairs]), rel=1e-12)
    assert diversity(torch.tensor(np.repeat(x[:1], 4, axis=0))) == pytest.approx(0.0, abs=1e-12)
    loo = [np.mean([x[j] @ x[k] for k in range(5) if k != j]) for j in range(5)]
    assert leave_one_out(torch.tensor(x)) == pytest.approx(loo, rel=1e-12)
    threshold = consistency_threshold(torch.tensor(x))
    assert (threshold.value, threshold.references) == (pytest.approx(min(loo)), 5)
    assert threshold.mean == pytest.approx(np.mean(loo))
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out(torch.tensor(x[:1]))


# --- the Inception network -------------------------------------------------------------------------

def test_the_fid_network_is_pytorch_fids_inception(monkeypatch):
    """Same weights in both: pytorch-fid's InceptionV3 (its weights 'download' replaced by ours) and ours
    give the same 2,048 pool3 features for the same images."""
    import pytorch_fid.inception as fid

    ours = inception.fid_network(None)
    weights = ours.state_dict() | {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    monkeypatch.setattr(fid, "load_state_dict_from_url", lambda *a, **k: weights)
    theirs = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    images = [Image.new("RGB", (64, 48), (200, 40, 90)), Image.effect_noise((80, 80), 60).convert("RGB")]
    backbone = inception.InceptionBackbone("test", True, ours, inception.FULL_SIZE, torch.device("cpu"))
    with torch.inference_mode():
        expected = torch.cat([theirs(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None])[0]
                              .flatten(1) for im in images])
    assert torch.allclose(backbone.encode_images(images), expected, atol=1e-4)


def test_inception_weights_offline_and_from_a_file(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(inception, "_loaded", {})
    with pytest.raises(BackboneError) as err:
        inception.load_inception(inception.INCEPTION_DEFAULT)
    message = str(err.value)
    assert inception.WEIGHTS_FILE in message and "checkpoints" in message and "--inception PATH" in message
    assert "--inception none" in message
    with pytest.raises(BackboneError, match="not one of pt_inception, none, tiny-random and no such file"):
        inception.load_inception(str(tmp_path / "missing.pth"))

    net = inception.fid_network(None)
    path = tmp_path / inception.WEIGHTS_FILE
    torch.save(net.state_dict() | {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, path)
    loaded = inception.load_inception(str(path))
    assert not loaded.random_weights and loaded.size == 299
    image = [Image.new("RGB", (40, 40), (10, 120, 200))]
    direct = inception.InceptionBackbone("direct", True, net, 299, torch.device("cpu"))
    assert torch.allclose(loaded.encode_images(image), direct.encode_images(image), atol=1e-5)
    torch.save({"not": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(BackboneError, match="not the pt_inception weights"):
        inception.load_inception(str(tmp_path / "wrong.pth"))
