"""Runs nbs/02_release_fidelity.ipynb (quick profile) and checks its metrics."""
import math
import pytest


@pytest.fixture(scope="module")
def fidelity(run_notebook):
    return run_notebook("release_fidelity", seed=0)


def test_images_and_model(fidelity):
    out, m = fidelity
    assert m["n_images"] == m["n_test_images"] + m["n_heldout_images"] == 200
    model = m["model"]
    assert model["parameters"] == 195_683
    assert 0 < model["mse_test"] < 0.2 and 0 < model["mse_heldout_train"] < 0.2   # quick model: crude but finite
    assert math.isfinite(model["mse_noise"])
    assert 1 <= model["spectrum_cifar"]["erank"] <= 4 and model["spectrum_cifar"]["s0_sd_ratio"] >= 1
    assert 0 <= model["spectrum_cifar"]["s_delta"] < 1


def test_spatial_cv(fidelity):
    _, m = fidelity
    cv = m["spatial_cv"]
    assert 0 < cv["min"] <= cv["median"] <= cv["max"] and cv["min"] <= cv["mean"] <= cv["max"]
    assert cv["verdict"] in ("HAS SPATIAL STRUCTURE", "SPATIALLY UNIFORM")


def test_class_and_region_tables(fidelity):
    _, m = fidelity
    assert len(m["per_class_error"]) == 10
    assert sum(r["n"] for r in m["per_class_error"].values()) == m["n_images"]
    for r in m["per_class_error"].values(): assert 0 < r["mean_mse"] <= r["max_patch"]
    assert -1 <= m["inter_class"]["min_cosine"] <= m["inter_class"]["mean_cosine"] <= 1
    for r in list(m["regions"].values()) + [m["regions_all"]]:
        assert r["center"] > 0 and r["edge"] > 0 and r["corner"] > 0
        assert r["edge_center_ratio"] == pytest.approx(r["edge"] / r["center"], rel=1e-6)


def test_modes(fidelity):
    _, m = fidelity
    a = m["per_mode_all"]
    assert sum(a["energy"]) == pytest.approx(1.0, abs=1e-4)
    assert len(a["only_mode_mse"]) == len(a["drop_mode_mse"]) == 4
    assert all(v > 0 for v in a["only_mode_mse"] + a["drop_mode_mse"]) and a["full_mse"] > 0


def test_probes(fidelity):
    _, m = fidelity
    t = m["probes"]
    dims = {"release error": 256, "eigenvalues (S)": 1024, "friction": 1024, "release + eigenvalues": 1280,
            "release + friction": 1280, "release + eigenvalues + friction": 2304, "log friction (not in document)": 1024}
    assert {k: v["dims"] for k, v in t.items()} == dims
    for r in t.values():
        assert r["n_train"] + r["n_test"] == m["n_images"] and r["n_test"] == 40
        assert 0 <= r["ci95"][0] <= r["test_accuracy"] <= r["ci95"][1] <= 1
        assert r["chance"] == pytest.approx(0.1)
    assert t["eigenvalues (S)"]["lift_pp"] == 0
    assert m["probe_error_map"]["test_accuracy"] == pytest.approx(t["release error"]["test_accuracy"])   # same seed, same split
    s = m["summary"]
    assert s["lift_full_over_eigenvalues_pp"] == pytest.approx(100 * (s["acc_full_conduit"] - s["acc_eigenvalues"]))
    assert m["friction_mean"] > 0 and math.isfinite(m["friction_spatial_cv"])


def test_failure_positions_and_figures(fidelity):
    out, m = fidelity
    for r in m["top_error_positions"].values():
        assert len(r["top3"]) == 3 and all(0 <= a < 16 and 0 <= b < 16 for a, b in r["top3"]) and r["worst_over_mean"] >= 1
    b = m["border_ring"]
    for r in b.values(): assert r["ring"] > 0 and r["interior"] > 0 and r["ratio"] == pytest.approx(r["ring"] / r["interior"], rel=1e-5)
    h = m["hot_patches"]
    assert h["n_patches"] == 256 and 0 <= h["n_hot"] == len(h["positions"]) < 256
    for f in ("examples", "spatial_cv", "class_error_maps", "regions", "modes", "probes", "hot_patches", "svae_training"):
        assert (out / "figures" / f"{f}.png").stat().st_size > 1000
