"""Runs nbs/02_release_fidelity.ipynb (quick profile) and checks its claims. The statistics it uses are tested on
planted maps in tests/test_maps.py and under their code in nbs/methods/; here only what the run itself claims."""
import pytest


@pytest.fixture(scope="module")
def fidelity(run_notebook):
    return run_notebook("release_fidelity", seed=0)


def test_headline_numbers_in_bands(fidelity, quick_bands):
    "Reconstruction MSE, spatial CV, friction CV, effective rank, class cosine within the bands of tests/fixtures/quick_bands.json."
    assert quick_bands("release_fidelity", fidelity[1]) == []


def test_document_table_and_figures_inline(fidelity, document_report):
    "The executed notebook shows its figures and a table with the document's numbers beside ours; every figure has alt text."
    document_report(fidelity, 8)


def test_images_and_model(fidelity):
    out, m = fidelity
    assert m["n_images"] == m["n_test_images"] + m["n_heldout_images"] == 200
    model = m["model"]
    assert model["parameters"] == 195_683
    # the model reconstructs CIFAR-10 (what it was trained on, with noise) far better than fresh 16-type noise
    assert model["mse_test"] < 0.2 * model["mse_noise"]


def test_error_maps_have_spatial_structure(fidelity):
    "The document's finding (spatial CV 0.40 > 0.1): the round-trip error is concentrated in some patches."
    assert fidelity[1]["spatial_cv"]["mean"] > 0.1


def test_every_mode_matters(fidelity):
    "Decoding with one mode only, or without any one mode, is worse than decoding with all four."
    a = fidelity[1]["per_mode_all"]
    assert all(v > a["full_mse"] for v in a["only_mode_mse"] + a["drop_mode_mse"])


def test_probes_share_one_split(fidelity):
    _, m = fidelity
    t = m["probes"]
    dims = {"release error": 256, "eigenvalues (S)": 1024, "friction": 1024, "release + eigenvalues": 1280,
            "release + friction": 1280, "release + eigenvalues + friction": 2304, "log friction (not in document)": 1024}
    assert {k: v["dims"] for k, v in t.items()} == dims
    assert {(r["n_train"], r["n_test"]) for r in t.values()} == {(160, 40)}
    assert m["probe_error_map"]["test_accuracy"] == pytest.approx(t["release error"]["test_accuracy"])   # same seed, same split


def test_figures(fidelity):
    out, _ = fidelity
    for f in ("examples", "spatial_cv", "class_error_maps", "regions", "modes", "probes", "hot_patches", "svae_training"):
        assert (out / "figures" / f"{f}.png").stat().st_size > 1000


def test_what_sets_the_spatial_cv(fidelity):
    "The error-definition experiment: the document's definition reproduces the headline CV; the RMSE map is flatter."
    m = fidelity[1]
    c = m["spatial_cv_causes"]
    d = c["definitions"]
    assert d["patch MSE (document)"] == pytest.approx(m["spatial_cv"]["mean"], rel=1e-9)
    assert d["patch RMSE"] < d["patch MSE (document)"]
    assert -1 < c["beta"] < 2 and 0 <= c["r2"] <= 1
    assert "spatial_cv_variants" not in m                                # off by default


def test_document_tables_explain_every_difference(fidelity):
    "Each document-vs-this-run table has an 'explained by' column."
    import nbformat
    out, m = fidelity
    nb = nbformat.read(out / f"{m['notebook']}.ipynb", 4)
    tables = [o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})
              and "this run" in o["data"]["text/html"] and "document" in o["data"]["text/html"]]
    assert len(tables) >= 3 and all("explained by" in t for t in tables)
