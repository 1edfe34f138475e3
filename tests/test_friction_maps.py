"""Runs notebook 03 (friction maps) with the quick profile and checks its metrics."""
import math


def test_friction_maps_quick(run_notebook):
    out, m = run_notebook("friction_maps", seed=0)
    n = m["n_images"]
    assert n == m["n_test_images"] + m["n_heldout_images"] and n >= 200
    assert m["grid"] == [16, 16] and m["n_patches"] == n * 256
    assert 0 <= m["conduit_refined_fraction"] < 0.05
    assert m["conduit_max_rel_err_vs_eigh"] < 1e-6          # solver vs LAPACK on the model's real Gram matrices
    mf = m["mean_friction"]
    assert len(mf["per_class"]) == 10 and all(math.isfinite(v) and v > 0 for v in mf["per_class"])
    assert all(0 <= s <= 5 for s in m["mean_settle_per_mode"])
    sp_ = m["spectrum"]
    assert 0 <= sp_["mode3_constant_fraction"] <= 1 and sp_["s0_over_sd_median"] >= 1
    assert 0 < sum(o["fraction"] for o in sp_["top_extraction_orders"]) <= 1 + 1e-9
    assert all(sorted(o["order"]) == [0, 1, 2, 3] for o in sp_["top_extraction_orders"])
    sp = m["spatial"]
    assert len(sp["cv_mean"]) == 4 and all(v >= 0 for v in sp["cv_mean"])
    assert sp["verdict"] in ("HAS SPATIAL STRUCTURE", "SPATIALLY UNIFORM")
    assert (sp["mean_cv"] > 0.1) == (sp["verdict"] == "HAS SPATIAL STRUCTURE")
    cm = m["class_maps"]
    assert sum(cm["counts"]) == n and len(cm["l2"]) == 10
    assert all(abs(cm["l2"][i][i]) < 1e-6 and abs(cm["cos"][i][i] - 1) < 1e-6 for i in range(10))
    assert -1 <= cm["cos_min"] <= cm["cos_mean"] <= 1
    ce = m["centre_edge"]
    assert all(r > 0 for r in ce["ratio"]) and len(ce["centre"]) == 10
    fs = m["f_stat"]
    assert fs["overall_max"] >= fs["overall_mean"] >= 0 and 0 <= fs["best_position"][0] < 16
    assert len(m["mean_map"]) == 4
    ist = m["image_stats"]
    assert 0 < ist["entropy"]["min"] <= ist["entropy"]["max"] <= 1 + 1e-9
    assert ist["hot_spots"]["min"] >= 0 and ist["hot_spots"]["max"] <= 256
    probes = m["probes"]
    assert set(probes) == {"friction", "settle", "eigenvalues (S)", "combined (S+friction+settle)",
                           "log friction (ours, not in the document)"}
    n_test = {p["n_test"] for p in probes.values()}
    assert len(n_test) == 1 and n_test.pop() == n - int(0.8 * n)          # one shared split
    for name, p in probes.items():
        assert 0 <= p["test_accuracy"] <= 1 and p["ci95"][0] <= p["test_accuracy"] <= p["ci95"][1]
        assert p["chance"] == 0.1
    assert probes["combined (S+friction+settle)"]["dims"] == 3 * 1024
    assert abs(m["probe_lift_combined_over_eigenvalues_pp"] - 100 * (probes["combined (S+friction+settle)"]["test_accuracy"]
               - probes["eigenvalues (S)"]["test_accuracy"])) < 1e-9
    assert m["summary"]["probe_friction"] == probes["friction"]["test_accuracy"]
    for f in ("class_mean_friction_maps", "f_statistic_maps", "probe_accuracy", "example_maps", "spatial_cv_hist"):
        assert (out / "figures" / f"{f}.png").stat().st_size > 1000
