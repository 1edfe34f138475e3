"""Tests of the autoencoder tangent-space notebook (nbs/04_ae_tangent.ipynb) and its library (manifold_nb.tangent)."""
import math
import numpy as np
import pytest
import torch
from fastcore import test as fct   # (imported as a module so pytest does not collect test_fail)
from scipy import ndimage

from manifold_nb.models.autoencoders import build_autoencoder, check_images, PCAAutoencoder, fit_pca_autoencoders
from manifold_nb.tangent import (TRANSFORMATIONS, DEFAULT_AMOUNTS, TangentAnalysis, transformation_tangents, decoder_jacobians,
                                 decoder_jacobians_loop, tangent_space_angles, tangent_analysis, model_by_name,
                                 stratified_indices)
from manifold_nb.transforms import transform

MODELS = [f"{k}{L}" for k in ("conv", "fc", "pca") for L in (16, 32, 128)]
DOC_PARAMS = dict(fc16=474_144, fc32=478_256, fc128=502_928, conv16=116_984, conv32=219_400, conv128=833_896)


@pytest.fixture(scope="module")
def quick(run_notebook):
    return run_notebook("ae_tangent", seed=0)


def test_headline_numbers_in_bands(quick, quick_bands):
    "Reconstruction MSE of all nine models and mean tangent angles within the bands of tests/fixtures/quick_bands.json."
    assert quick_bands("ae_tangent", quick[1]) == []


def test_document_table_and_figures_inline(quick, document_report):
    "The executed notebook shows its figures and a table with the document's numbers beside ours; every figure has alt text."
    document_report(quick, 5)


def test_reconstruction_mse(quick):
    _, m = quick
    mse = m["reconstruction_mse"]; base = mse["mean_image_baseline"]
    assert 0.05 < base < 0.15                       # Fashion-MNIST pixel variance around the mean image
    for name in MODELS:
        assert math.isfinite(mse[name]) and 0 < mse[name] < base, (name, mse[name], base)
    assert mse["pca128"] < mse["pca32"] < mse["pca16"]
    for name in MODELS[:6]: assert len(m["training"][name]["loss_per_epoch"]) == m["training"][name]["epochs"], name


def test_tangent_table(quick):
    _, m = quick
    tab, jac = m["tangent_angles"], m["decoder_jacobians"]
    assert m["tangent_test"]["n_images"] >= 100 and m["tangent_test"]["n_per_class"] >= 10
    assert set(tab) == set(MODELS)
    for name in MODELS:
        for t in TRANSFORMATIONS:
            cells = tab[name][t]
            assert len(cells) == 11                               # "all" + 10 classes
            for c, s in cells.items(): assert s["n"] >= (100 if c == "all" else 10)
    for k in (16, 32, 128):  # PCA's decoder Jacobian is its orthonormal component matrix: full rank, singular values 1
        assert jac[f"pca{k}"]["rank_min"] == k and abs(jac[f"pca{k}"]["s_max"]["mean"] - 1) < 1e-4
    # observed, not guaranteed: the PCA spans are nested, but the base point (the reconstruction) and so the tangent
    # vector change with the number of components; the mean angle still shrinks as components are added
    for t in TRANSFORMATIONS:
        assert tab["pca128"][t]["all"]["mean"] <= tab["pca32"][t]["all"]["mean"] <= tab["pca16"][t]["all"]["mean"]


def test_document_reproduction(quick):
    _, m = quick
    # PCA needs no training: the uncentred PCA (as the document) must reproduce its printed angles for both images
    assert m["doc_pca_reproduction_max_abs_diff"] < 0.05
    assert {n: a["total_params"] for n, a in m["architecture"].items()} == DOC_PARAMS
    for name, rows in m["layer_ranks"].items():   # the linear maps whose ranks are reported, with the operators' shapes
        L = int(name.lstrip("convfc"))
        shapes = ({"elayer1": [256, 784], "elayer2": [128, 256], "elayer3": [L, 128],
                   "dlayer1": [128, L], "dlayer2": [256, 128], "dlayer3": [784, 256]} if name.startswith("fc") else
                  {"econv1": [18432, 784], "econv3": [L, 3200], "dconv1": [3200, L], "dconv3": [784, 18432]})
        assert {k: r["shape"] for k, r in rows.items()} == shapes, name
    for name, v in m["immersion"].items():
        if name.startswith("fc"): assert v["weights_decide"].startswith("yes"), (name, v["weights_decide"])
    for pair in ("sneaker_to_pullover", "pant_to_pant"):
        assert set(m["interpolation_nearest_train_distance"][pair]) == {"pixel"} | set(MODELS[:6])
    figs = set(m["figures"])
    for f in ("reconstructions", "interpolation_sneaker_to_pullover", "tangent_vectors", "angle_distributions"):
        assert f"figures/{f}.png" in figs


def test_pca_known_answer():
    "For a linear decoder the tangent space is the span of the components: in-span 0 deg, orthogonal 90 deg."
    g = torch.Generator().manual_seed(1)
    C = torch.linalg.qr(torch.randn(784, 10, generator=g, dtype=torch.float64))[0].T   # (10, 784) orthonormal
    pca = PCAAutoencoder(C.float(), torch.rand(784, generator=g))
    J = decoder_jacobians(pca, torch.randn(3, 10, generator=g))
    assert torch.allclose(J, C.T.float().expand(3, 784, 10), atol=1e-6)
    inside = torch.randn(4, 10, generator=g, dtype=torch.float64) @ C
    outside = torch.randn(4, 784, generator=g, dtype=torch.float64); outside -= outside @ C.T @ C
    assert torch.allclose(tangent_space_angles(J[0].double(), inside), torch.zeros(4, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(tangent_space_angles(J[0].double(), outside), torch.full((4,), 90., dtype=torch.float64), atol=1e-5)
    res = tangent_analysis(pca, torch.rand(5, 1, 28, 28, generator=g), progress=False)
    assert isinstance(res, TangentAnalysis) and res.amounts == DEFAULT_AMOUNTS and (res.rank == 10).all()


class LinearAE(torch.nn.Module):
    "A linear autoencoder with a planted decoder matrix A (784, L): decode(z) = b + A z, encode(x) = A⁺ (x - b)."
    def __init__(self, A, b):
        super().__init__(); self.A, self.b, self.latent_dim = A.float(), b.float(), A.shape[1]
    def encode(self, x): return torch.linalg.lstsq(self.A, (x.reshape(len(x), -1) - self.b).T).solution.T
    def decode(self, z): return (self.b + z @ self.A.T).reshape(-1, 1, 28, 28)


def test_linear_decoder_recovers_its_column_space():
    "A linear decoder with a non-orthonormal planted A: Jacobian = A everywhere; its column space at 0 deg, the complement at 90 deg; a planted rank is found."
    g = torch.Generator().manual_seed(3)
    A = torch.randn(784, 6, generator=g, dtype=torch.float64) @ torch.diag(torch.tensor([5., 2., 1., .5, .2, .1], dtype=torch.float64))
    ae = LinearAE(A, torch.rand(784, generator=g, dtype=torch.float64))
    z = torch.randn(4, 6, generator=g)
    J = decoder_jacobians(ae, z)
    assert torch.allclose(J, A.float().expand(4, 784, 6), rtol=1e-5, atol=1e-6)
    inside = torch.randn(4, 6, generator=g, dtype=torch.float64) @ A.T
    Q = torch.linalg.qr(A)[0]
    outside = torch.randn(4, 784, generator=g, dtype=torch.float64); outside -= outside @ Q @ Q.T
    assert tangent_space_angles(J, inside).abs().max() < 1e-3
    assert (tangent_space_angles(J, outside) - 90).abs().max() < 1e-3
    mix = inside / inside.norm(dim=1, keepdim=True) + outside / outside.norm(dim=1, keepdim=True) * math.sqrt(3)
    assert (tangent_space_angles(J, mix) - 60).abs().max() < 1e-3                # tan(angle) = sqrt(3)
    A_def = A.clone(); A_def[:, 5] = A_def[:, 0] - 2 * A_def[:, 1]               # plant rank 5 of 6
    res = tangent_analysis(LinearAE(A_def, torch.zeros(784)), torch.rand(3, 1, 28, 28, generator=g), progress=False)
    assert (res.rank == 5).all()


class BlobOrbit(torch.nn.Module):
    "A decoder whose image is a rotation orbit: z (N, 1) radians -> a sum of Gaussian blobs rotated by z about the image centre."
    latent_dim = 1
    def __init__(self, z0=0.3):
        super().__init__(); self.z0 = z0
        self.c, self.w, self.s = torch.tensor([[5., 2.], [-3., -6.]]), torch.tensor([1., .5]), torch.tensor([14., 10.])
        y, x = torch.meshgrid(torch.arange(28.) - 13.5, torch.arange(28.) - 13.5, indexing="ij"); self.p = torch.stack([x, y], -1)
    def encode(self, x): return torch.full((len(x), 1), self.z0)
    def decode(self, z):
        c, s = torch.cos(z[:, :1]), torch.sin(z[:, :1])
        cx, cy = c * self.c[:, 0] - s * self.c[:, 1], s * self.c[:, 0] + c * self.c[:, 1]       # (N, K) rotated centres
        d2 = (self.p[None, :, :, None, 0] - cx[:, None, None]) ** 2 + (self.p[None, :, :, None, 1] - cy[:, None, None]) ** 2
        return (self.w * torch.exp(-d2 / self.s)).sum(-1)[:, None]


def test_rotation_orbit_decoder_tangent_is_the_rotation_lie_derivative():
    "The tangent of a decoder whose image is a rotation orbit is the rotation Lie derivative (transforms.lie_derivative): ~0 deg; shifts and scale are far."
    from manifold_nb.transforms import lie_derivative
    d = BlobOrbit(); z = torch.tensor([[0.3], [0.7], [-0.5], [0.]])
    J = decoder_jacobians(d, z).double(); x = d.decode(z).double()
    ang = {k: tangent_space_angles(J, lie_derivative(x, k, side="central").reshape(len(z), -1)) for k in ("rotation", "shift_x", "shift_y", "scale")}
    assert ang["rotation"].max() < 3, ang["rotation"]
    assert min(float(ang[k].min()) for k in ("shift_x", "shift_y", "scale")) > 40, ang
    res = tangent_analysis(d, torch.zeros(2, 1, 28, 28), progress=False)   # the document's 1° spline forward differences (their O(t) term: a few degrees)
    assert res.angles_deg["rotation"].max() < 5 and min(res.angles_deg["shift_x"].min(), res.angles_deg["shift_y"].min()) > 40


def test_tangent_of_a_direction_in_the_span_is_at_zero_degrees():
    "PCA spanned by a shift's own tangent at a base image: that shift is at 0 degrees, the other one is not."
    g = torch.Generator().manual_seed(2)
    x0 = torch.nn.functional.pad(torch.rand(1, 1, 20, 20, generator=g, dtype=torch.float64), (4, 4, 4, 4))
    v = torch.from_numpy(transformation_tangents(x0, "shift_x"))[0]
    C = torch.stack([x0.flatten()/x0.norm(), v - (v @ x0.flatten())/x0.norm()**2*x0.flatten()])
    C = torch.linalg.qr(C.T)[0].T                       # orthonormal span of x0 and its x-shift tangent
    pca = PCAAutoencoder(C.float(), torch.zeros(784))
    res = tangent_analysis(pca, x0.float(), progress=False)
    assert res.angles_deg["shift_x"][0] < 0.05 and res.angles_deg["shift_y"][0] > 10


def test_batched_matches_document():
    "vmap(jacfwd) equals the document's per-image jacobian loop; batched transforms equal scipy image by image."
    torch.manual_seed(0)
    m = build_autoencoder("fc", 32); z = torch.randn(4, 32)
    Jl = decoder_jacobians_loop(m, z)
    assert (decoder_jacobians(m, z) - Jl).abs().max() <= 1e-5 * Jl.abs().max()
    x = np.random.default_rng(0).random((5, 28, 28))
    xt = torch.from_numpy(x)[:, None]
    np.testing.assert_allclose(transform(xt, math.radians(1), interpolation="spline")[:, 0].numpy()[:, 1:-1, 1:-1],
                               np.stack([ndimage.rotate(i, 1, reshape=False) for i in x])[:, 1:-1, 1:-1], atol=1e-10)
    np.testing.assert_allclose(transformation_tangents(x, "rotation", math.radians(1)).reshape(5, 28, 28)[:, 1:-1, 1:-1],
                               np.stack([ndimage.rotate(i, 1, reshape=False) - i for i in x])[:, 1:-1, 1:-1], atol=1e-10)
    np.testing.assert_allclose(transformation_tangents(x, "shift_y", 2.0).reshape(5, 28, 28),
                               np.stack([ndimage.shift(i, [2, 0]) - i for i in x]), atol=1e-10)


def test_bad_input_raises():
    fct.test_fail(lambda: build_autoencoder("fc", 64), contains="latent_dim must be one of [16, 32, 128]")
    fct.test_fail(lambda: build_autoencoder("resnet", 16), contains="kind must be one of")
    fct.test_fail(lambda: model_by_name({"fc16": None}, "fc64"), contains="model must be one of ['fc16']")
    fct.test_fail(lambda: check_images(torch.zeros(3, 1, 32, 32)), contains="x must have shape (N,1,28,28)")
    fct.test_fail(lambda: transformation_tangents(np.zeros((2, 28, 28)), "x_shift"), contains="kind must be one of")
    fct.test_fail(lambda: transformation_tangents(np.zeros((2, 27, 28)), "rotation"), contains="images must have shape")
    fct.test_fail(lambda: check_images([0.] * 784), contains="x must be a torch.Tensor or numpy array")
    fct.test_fail(lambda: decoder_jacobians(build_autoencoder("conv", 16), torch.zeros(2, 32)), contains="z must have shape (N, 16)")
    fct.test_fail(lambda: tangent_analysis(build_autoencoder("fc", 16), torch.zeros(2, 1, 28, 28), kinds=("zoom",)),
              contains="kind must be one of")
    fct.test_fail(lambda: tangent_analysis(build_autoencoder("fc", 16), torch.zeros(2, 1, 28, 28), amounts={"x_shift": 1.}),
              contains="amounts key must be one of")
    fct.test_fail(lambda: stratified_indices(np.array([0, 0, 1]), 2), contains="n_per_class=2")


def test_stages_and_jacobian_scale_experiment(quick):
    "Stages are timed; the Jacobian-scale experiment is logged for every autoencoder, and every document row says what explains it."
    _, m = quick
    names = [s["name"] for s in m["stages"]]
    for stage in ("train autoencoders", "test MSE", "tangent angles at scale", "Jacobian scale: code scale and BatchNorm mode"):
        assert stage in names, names
    assert all(s["seconds"] >= 0 for s in m["stages"])
    for name, r in m["jacobian_at_pullover"].items():
        assert r["code_std_mean"] > 0 and r["s_max_unit_variance"] > 0 and r["s_max_batchnorm_train_mode"] > 0, name
    for img in ("pullover", "sneaker"):
        expl = m["doc_image_angles_explained"][img]
        assert all(expl[f"pca{k}_uncentred"].startswith("reproduced") for k in (16, 32, 128)), expl
        assert all(expl[n] for n in expl)
    assert "spread_sweep" not in m          # off by default


def test_fast_elu_is_elu_in_the_models():
    "The models' ELU is F.elu's function: a model's output with F.elu swapped in differs only at round-off."
    from manifold_nb.models import autoencoders
    torch.manual_seed(0); x = torch.rand(8, 1, 28, 28)
    for kind in ("fc", "conv"):
        m = build_autoencoder(kind, 16).eval()
        with torch.no_grad():
            new = m(x); fast = autoencoders.elu; autoencoders.elu = torch.nn.functional.elu
            try: old = m(x)
            finally: autoencoders.elu = fast
        assert (new - old).abs().max() < 1e-5, kind
