"""Claims of the spatial-map statistics (manifold_nb.maps) and probes (manifold_nb.probes) on synthetic maps with
planted class structure: each test fails on an implementation that returns constants or random maps."""
import ast, math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from manifold_nb.maps import (spatial_cv, spatial_stats, class_mean_maps, map_distances, region_means, hot_patches,
                              position_f_stat, top_positions)
from manifold_nb.probes import ridge_probe, probe_table, wilson_interval

ROOT = Path(__file__).resolve().parents[1]


def planted_maps(n_per_class=60, n_classes=4, grid=16, amplitude=1.0, block=1, seed=0):
    "Maps N(1, 1) per patch; class c adds `amplitude` on its own block×block patch block at PLANTED[c]. -> maps, y, positions"
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    maps = 1 + rng.standard_normal((len(y), grid, grid))
    positions = [(2 + 3 * c, 5 + 2 * c) for c in range(n_classes)]       # distinct, non-overlapping for block <= 2
    for c, (r, k) in enumerate(positions): maps[y == c, r:r + block, k:k + block] += amplitude
    return torch.from_numpy(maps), torch.from_numpy(y), positions


# ---- spatial CV ------------------------------------------------------------------------------------------------------

def test_spatial_cv_constant_map_is_zero():
    assert spatial_cv(torch.full((3, 16, 16), 7.0)).abs().max() == 0


@pytest.mark.parametrize("k,a,b", [(64, 3.0, 1.0), (1, 10.0, 2.0), (200, 0.5, 4.0)])
def test_spatial_cv_two_level_map_is_analytic(k, a, b):
    "k of N positions at a, the rest at b: CV = sqrt(N/(N-1) p(1-p)) |a-b| / (pa + (1-p)b), p = k/N."
    m = torch.full((1, 16, 16), b); m.view(1, -1)[0, torch.randperm(256, generator=torch.Generator().manual_seed(k))[:k]] = a
    p, N = k / 256, 256
    expected = math.sqrt(N / (N - 1) * p * (1 - p)) * abs(a - b) / (p * a + (1 - p) * b)
    assert float(spatial_cv(m)[0]) == pytest.approx(expected, rel=1e-9)      # EPS = 1e-10 in the denominator


def test_spatial_stats_per_channel():
    "Channels are separate maps: a constant channel has CV 0 beside a varying one."
    m = torch.stack([torch.ones(2, 8, 8), torch.arange(128.).reshape(2, 8, 8)], -1)
    st = spatial_stats(m)
    assert st.cv.shape == (2, 2) and (st.cv[:, 0] == 0).all() and (st.cv[:, 1] > 0).all()
    assert float(st.mean[1, 1]) == pytest.approx(64 + 31.5)


# ---- class structure -------------------------------------------------------------------------------------------------

def test_class_mean_maps_recover_the_planted_patches():
    maps, y, pos = planted_maps(amplitude=3.0)
    cm = class_mean_maps(maps, y, 4)
    assert cm.counts.tolist() == [60.0] * 4
    deviation = cm.mean - cm.mean.mean(0, keepdim=True)                  # each class against the average class
    assert [divmod(int(d.argmax()), 16) for d in deviation] == pos
    for c, (r, k) in enumerate(pos): assert float(cm.mean[c, r, k]) == pytest.approx(4.0, abs=0.5)   # 1 + 3 ± noise
    assert float(cm.var.mean()) == pytest.approx(1.0, abs=0.05)          # within-class variance of N(1, 1) noise


def test_map_distances_separate_planted_from_identical_classes():
    maps, y, _ = planted_maps(amplitude=3.0)
    planted = map_distances(class_mean_maps(maps, y, 4).mean)
    same = map_distances(class_mean_maps(maps, torch.from_numpy(np.random.default_rng(0).permutation(y.numpy())), 4).mean)
    assert planted.cos_min < same.cos_min
    # two class means differ by noise of variance 2/60 in each of 256 patches, and by +3 at two planted patches
    assert same.l2_mean == pytest.approx(math.sqrt(2 * 256 / 60), rel=0.1)
    assert planted.l2_mean == pytest.approx(math.sqrt(2 * 3 ** 2 + 2 * 256 / 60), rel=0.1)


def test_f_statistic_peaks_at_the_planted_patches():
    maps, y, pos = planted_maps(amplitude=1.0)
    fs = position_f_stat(maps, y)
    top4 = {divmod(int(i), 16) for i in fs.f.flatten().topk(4).indices}
    assert top4 == set(pos)
    # the scale is the real ANOVA F: at a planted patch F follows a noncentral F(3, 236) with λ = n Σ(μ_c − μ̄)²/σ² = 45
    lo, hi = stats.ncf.ppf([0.0005, 0.9995], 3, 236, 60 * (0.75 ** 2 + 3 * 0.25 ** 2))
    assert all(lo < float(fs.f[p]) < hi for p in pos)
    # and elsewhere it is calibrated: about 5 % of the null positions have p < 0.05
    null = torch.ones(16, 16, dtype=torch.bool)
    for p in pos: null[p] = False
    assert 0.02 < float((fs.p[null] < 0.05).double().mean()) < 0.09
    assert float(fs.f[null].mean()) == pytest.approx(236 / 234, abs=0.15)  # E[F(3, 236)] = 236/234


def test_region_means_of_a_planted_ring():
    m = torch.ones(2, 16, 16); m[:, :4] = 3.0; m[:, 12:] = 3.0; m[:, :, :4] = 3.0; m[:, :, 12:] = 3.0   # ring of 3, centre 1
    r = region_means(m)
    assert r.centre.tolist() == [1.0, 1.0] and r.edge.tolist() == [3.0, 3.0] and r.corner.tolist() == [3.0, 3.0]
    assert r.edge_centre_ratio.tolist() == pytest.approx([3.0, 3.0])


# ---- hot patches -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 5, 20, 40])
def test_hot_patches_found_exactly_where_planted(k):
    g = torch.Generator().manual_seed(k)
    maps = 1 + 0.02 * torch.randn(3, 16, 16, generator=g)
    planted = torch.zeros(3, 256, dtype=torch.bool)
    for i in range(3): planted[i, torch.randperm(256, generator=g)[:k]] = True
    planted = planted.reshape(3, 16, 16)
    maps[planted] += 5.0
    assert torch.equal(hot_patches(maps), planted)


def test_hot_patches_none_in_noise_free_or_too_crowded_maps():
    assert not hot_patches(torch.ones(16, 16)).any()
    crowded = torch.ones(16, 16); crowded.view(-1)[:60] = 9.0            # 60 > 51 of 256: mean + 2σ exceeds 9
    assert not hot_patches(crowded).any()


def test_top_positions_of_planted_peaks():
    m = torch.zeros(2, 8, 8); m[0, 1, 2], m[0, 5, 5], m[1, 7, 0] = 3.0, 2.0, 1.0
    tp = top_positions(m, 2)
    assert tp.positions[0] == [(1, 2), (5, 5)] and tp.positions[1][0] == (7, 0)
    assert float(tp.peak_over_mean[0]) == pytest.approx(3.0 / (5.0 / 64))


# ---- probes on planted maps ------------------------------------------------------------------------------------------

def test_probe_on_planted_maps_beats_chance_by_a_margin():
    "2×2 planted blocks of +2σ, 4 classes of 100: the probe's Wilson lower bound lies 0.3 above chance (0.25)."
    maps, y, _ = planted_maps(n_per_class=100, amplitude=2.0, block=2)
    r = ridge_probe(maps.reshape(len(y), -1), y, seed=0)
    assert r.n_test == 80 and r.chance == 0.25
    assert r.ci95.low > r.chance + 0.3, r


def test_probe_without_class_signal_stays_at_chance():
    "Maps with no class signal: chance (0.1) lies in the probe's 95 % Wilson interval for (nearly) every seed."
    y = torch.from_numpy(np.repeat(np.arange(10), 40))
    inside, accs = 0, []
    for seed in range(10):
        maps = torch.from_numpy(1 + np.random.default_rng(100 + seed).standard_normal((400, 16, 16)))
        r = ridge_probe(maps.reshape(400, -1), y, seed=seed)
        inside += r.ci95.low <= 0.1 <= r.ci95.high; accs.append(r.test_accuracy)
    assert inside >= 9
    assert abs(np.mean(accs) - 0.1) < 0.03                               # ~3 standard errors of the mean of 10


def test_probe_table_pairs_probes_on_one_split():
    maps, y, _ = planted_maps(n_per_class=100, amplitude=2.0, block=2)
    noise = torch.randn(len(y), 50, generator=torch.Generator().manual_seed(0))
    t = probe_table({"noise": noise, "planted": maps.reshape(len(y), -1)}, y, reference="noise", seed=3)
    assert t.loc["planted", "test_accuracy"] == ridge_probe(maps.reshape(len(y), -1), y, seed=3).test_accuracy
    assert t.loc["planted", "lift_pp"] > 30


def test_wilson_interval_textbook():
    assert wilson_interval(81, 100) == pytest.approx((0.7222, 0.8749), abs=1e-4)


# ---- layering ---------------------------------------------------------------------------------------------------------

STUDIES = ("generators", "fidelity", "friction", "tangent", "symmetry")


@pytest.mark.parametrize("study", STUDIES)
def test_studies_import_no_other_study(study):
    "The import graph of the five study modules: none imports another (issue 10's layering)."
    tree = ast.parse((ROOT / "manifold_nb" / f"{study}.py").read_text())
    imported = {(n.module or "").split(".")[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name.split(".")[-1] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & set(STUDIES), imported & set(STUDIES)
