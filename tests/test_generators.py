"""Generators notebook (rotation/shift/scale generators of MNIST, equivariant map): quick profile + known answers."""
import math

import numpy as np
import pytest
import torch

from manifold_nb.generators import (GeneratorFit, solve_joint_equivariant_map, planted_joint_equivariant_data, lie_generator, lie_generators, min_rtol,
                                    planted_equivariant_data, planted_generator_data, relative_error, solve_equivariant_map, solve_generator,
                                    solve_generators, equivariance_residual)
from manifold_nb.transforms import TRANSFORMS, fd_derivative, lie_derivative, operator_generator, transform


@pytest.fixture(scope="module")
def quick(run_notebook):
    return run_notebook("generators", seed=0)


def test_quick_metrics(quick):
    out, m = quick
    assert 0.85 < m["cnn"]["test_accuracy"] <= 1
    assert m["known_answer_max_error"] <= 1e-8
    for k in TRANSFORMS:   # exact derivative vs float64 reference; the document's estimator is ~1e-3 off
        e = m["pixel_derivative_error"][k]
        assert e["exact_upwind_f32"] <= 1e-5 and e["document_forward_f32"] >= 100*e["exact_upwind_f32"]
    fe = m["feature_derivative_error"]
    assert fe["features_jvp_f32"] <= 1e-5 and fe["features_jvp_f32"] <= fe["document_forward_f32"]/100
    assert fe["jvp_f32"] > 10*fe["features_jvp_f32"]   # plain jvp picks one entry of tied max-pool windows
    g = m["generators"]
    assert g["JB"]["shape"] == [784, 784] and g["JA"]["shape"] == [490, 490]
    assert g["JB"]["rank"] < 784                               # MNIST's constant corners: B is rank-deficient
    assert g["JB"]["train_residual"] < 1e-2 and g["JB"]["heldout_residual"] < 0.2
    assert abs(g["JB_vs_document_pipeline"]) < 1e-2            # same generator up to the document's derivative error
    s = m["smooth_known_answer"]
    assert abs(s["order_central"] - 2) < 0.3 and s["n112"]["central"] < 0.01
    sw = m["lambda_sweep"]
    assert len(sw) >= 6 and sw[0]["lam"] == 0
    assert sw[-1]["equivariance"] < 0.2*sw[0]["equivariance"]   # the penalty buys equivariance
    assert sw[0]["r2_train"] >= sw[-1]["r2_train"] - 1e-9       # ... at the price of fit
    r = m["robustness"]
    assert len(r["angles_deg"]) == len(r["cnn_accuracy"]) == 13
    mid = r["angles_deg"].index(0.0)
    assert r["cnn_accuracy"][mid] > r["cnn_accuracy"][0] and r["cnn_accuracy"][mid] > r["cnn_accuracy"][-1]
    for f in ("spectra", "generator_matrices", "jx_vs_true", "lambda_sweep", "robustness"):
        assert (out / "figures" / f"{f}.png").exists()
    for f in ("JA.npy", "JB.npy", "A_subset.npy", "B_subset.npy", "computation_metadata.json"):
        assert (out / "matrices" / f).exists()
    assert np.load(out / "matrices" / "JB.npy").shape == (784, 784)


def test_quick_lie_algebra_metrics(quick):
    "Six generators, structure constants of three families, per-generator equivariance errors with intervals."
    from manifold_nb.transforms import AFF2_BASIS
    out, m = quick
    assert len(m["six_generators"]) == 12 and {r["generator"] for r in m["six_generators"]} == set(AFF2_BASIS)
    assert m["known_answer"]["structure_constants_so3"] <= 1e-8 and m["known_answer"]["structure_constants_aff2_matrices"] <= 1e-8
    sc = m["structure_constants"]
    assert sc["basis"] == list(AFF2_BASIS) and np.array(sc["analytic"]).shape == (6, 6, 6)
    ops, smooth = sc["operators"], sc["operators, digits smoothed σ=1 px"]
    assert smooth["error_vs_aff2"] < ops["error_vs_aff2"] < sc["features (J^A)"]["error_vs_aff2"]   # smoother images: closer to aff(2)
    assert smooth["median_closure_residual"] < ops["median_closure_residual"]
    for f in ("operators", "pixels (J^B)", "features (J^A)"):
        assert len(sc[f]["closure_residual"]) == 15 and np.array(sc[f]["c"]).shape == (6, 6, 6)
    le = m["local_equivariance"]["per_generator"]
    assert set(le) == set(AFF2_BASIS)
    for r in le.values():
        for key in ("logits_invariance", "features_invariance", "features_equivariance_JA"):
            assert r[key]["low"] <= r[key]["mean"] <= r[key]["high"]
    # per unit t, a 1-pixel shift changes the logits far less than a 1-radian rotation
    assert le["shift_x"]["logits_invariance"]["high"] < le["rotation"]["logits_invariance"]["low"]
    assert (out / "figures" / "structure_constants.png").exists()


def test_quick_stages_recorded(quick):
    "Every costly block of the notebook is a timed stage in metrics.json."
    names = {s["name"] for s in quick[1]["stages"]}
    for n in ("train CNN", "six generators: features, derivatives, fits", "train augmented CNN", "feature algebra: plain and augmented",
              "λ sweep (rotation)", "joint map (six generators)", "robustness to rotation"):
        assert n in names, n
    assert all(s["seconds"] >= 0 for s in quick[1]["stages"])


@pytest.mark.parametrize("method", ["gram", "svd", "pinv"])
def test_solve_generators_share_one_factorisation(method):
    "K planted generators at once: each recovered (full rank) and equal to the one-at-a-time solution."
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 6, generator=g, dtype=torch.float64)
    Js = torch.randn(4, 6, 6, generator=g, dtype=torch.float64)
    fits = solve_generators(X, torch.stack([X @ J.T for J in Js]), method=method)
    assert len(fits) == 4
    for J, f in zip(Js, fits):
        assert relative_error(f.J, J) < 1e-10
        assert relative_error(f.J, solve_generator(X, X @ J.T, method=method).J) < 1e-12
    with pytest.raises(ValueError, match="same shape"): solve_generators(X, [X, X[:, :5]])


def test_lie_generators_equal_one_at_a_time():
    "One projector for all six transformations gives each one's lie_generator, and the data-fitted generator solve_generator finds."
    g = torch.Generator().manual_seed(4)
    x = torch.nn.functional.avg_pool2d(torch.randn(60, 1, 16, 16, generator=g, dtype=torch.float64), 2)
    fits = lie_generators(x, TRANSFORMS)
    assert set(fits) == set(TRANSFORMS)
    for k in TRANSFORMS:
        assert torch.equal(fits[k].J, lie_generator(x, k).J)
        assert relative_error(fits[k].J, solve_generator(x.flatten(1), lie_derivative(x, k).flatten(1)).J) < 1e-9


def test_features_jvp_several_tangents_one_pass():
    "K tangents in one stacked pass: the features once and each tangent's derivative as in its own pass and as torch.func.jvp (no ties)."
    from manifold_nb.models.cnn import MNISTCNN, features_jvp
    torch.manual_seed(0)
    m = MNISTCNN().eval().double()
    for bn in [l for l in m.modules() if isinstance(l, torch.nn.BatchNorm2d)]:
        bn.running_mean.normal_(); bn.running_var.uniform_(0.5, 2)
    x, dx = torch.randn(23, 1, 28, 28, dtype=torch.float64), torch.randn(3, 23, 1, 28, 28, dtype=torch.float64)
    A, dA = features_jvp(m, x, dx, batch_size=5)
    assert dA.shape == (3, 23, 490)
    for k in range(3):
        A1, dA1 = features_jvp(m, x, dx[k])
        _, ref = torch.func.jvp(m.features, (x,), (dx[k],))
        assert relative_error(A, A1) < 1e-12 and relative_error(dA[k], dA1) < 1e-12 and relative_error(dA[k], ref) < 1e-10


def test_document_JB_norm_reproduced():
    "The document's pipeline on test images 0..4999 gives ‖J^B‖ = 400.50 (within 0.5 %); needs only data + operator."
    from manifold_nb.data import load_mnist
    X, _ = load_mnist("test", n=5000)
    dB = fd_derivative(X, "rotation", eps=1e-4, batch_size=500).flatten(1)
    J = solve_generator(X.flatten(1), dB, method="pinv").J
    assert abs(J.norm().item()/400.50 - 1) < 5e-3


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_exact_derivative_known_answer(kind):
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    ref = fd_derivative(x, kind, eps=1e-5, scheme="richardson")
    assert relative_error(lie_derivative(x, kind), ref) < 1e-7
    assert relative_error(lie_derivative(x.float(), kind), ref) < 1e-6
    J = operator_generator(kind)
    assert relative_error((x.flatten(1) @ J.T).reshape(x.shape), lie_derivative(x, kind)) < 1e-12


def test_planted_generator_recovered():
    for d in (4, 5):
        X, dX, J = planted_generator_data(15, d, seed=d)
        for method in ("gram", "svd"):
            fit = solve_generator(X, dX, method=method)
            assert isinstance(fit, GeneratorFit) and fit.method == method
            assert fit.rank == d and relative_error(fit.J, J) < 1e-8


def test_rtol_below_resolution_refused():
    "Issue 11.6: rank-3 data; at rtol=1e-9 the SVD route finds rank 3 and the planted norm 4.42, the Gram route refuses."
    X, dX, J = planted_generator_data(n=15, d=6, rank=3, seed=0)
    svd = solve_generator(X, dX, rtol=1e-9, method="svd")
    assert svd.rank == 3 and abs(svd.J.norm().item() - 4.42) < 5e-3
    P = torch.linalg.pinv(X) @ X
    assert relative_error(svd.J, J @ P) < 1e-8                      # the planted generator on the data's span
    with pytest.raises(ValueError, match=r"rtol=1e-09 is below what method='gram' can resolve"):
        solve_generator(X, dX, rtol=1e-9, method="gram")
    x = X.reshape(15, 1, 2, 3)
    with pytest.raises(ValueError, match=r"below what method='lie' can resolve"):
        lie_generator(x, rtol=1e-9)
    with pytest.raises(ValueError, match=r"below what method='pinv' can resolve"):
        solve_generator(X.float(), dX.float(), rtol=1e-9, method="pinv")
    # at and above the floor, every method gives the SVD route's rank and generator
    for method in ("gram", "svd", "pinv"):
        r = max(min_rtol(method, 15, 6, torch.float64), 1e-7)
        fit = solve_generator(X, dX, rtol=r, method=method)
        assert relative_error(fit.J, solve_generator(X, dX, rtol=r, method="svd").J) < 1e-6, method
        assert fit.rank in (None, 3)


def test_non_finite_input_refused():
    X, dX, _ = planted_generator_data(n=15, d=6, rank=3, seed=0)
    Xn = X.clone(); Xn[0, 0] = float("nan")
    for method in ("gram", "svd", "pinv"):
        with pytest.raises(ValueError, match="X contains non-finite values"): solve_generator(Xn, dX, method=method)
    with pytest.raises(ValueError, match="dX contains non-finite values"): solve_generator(X, dX/0.)
    with pytest.raises(ValueError, match="x contains non-finite values"): lie_generator(Xn.reshape(15, 1, 2, 3))
    with pytest.raises(TypeError, match="X must be a torch.Tensor"): solve_generator(X.tolist(), dX)


def test_equivariant_solvers_agree():
    A, B, JA, JB, T0 = planted_equivariant_data()
    for lam in (0., 1., 10.):
        Tc = solve_equivariant_map(A, B, JA, JB, lam, tol=1e-13).T
        assert np.abs(Tc - T0).max() < 1e-8
    A, B, JA, JB, _ = planted_equivariant_data(noise=0.3, seed=3)
    for lam in (0.05, 5.):
        Tk = solve_equivariant_map(A, B, JA, JB, lam, method="kron").T
        fit = solve_equivariant_map(A, B, JA, JB, lam, tol=1e-13); Tc = fit.T
        assert fit.converged and fit.rel_residual < 1e-12
        assert np.abs(Tk - Tc).max() < 1e-8
    assert equivariance_residual(Tk, JA, JB) < 0.05


def test_bad_input():
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="eps must be"): fd_derivative(x, eps=0.)
    with pytest.raises(ValueError, match="eps must be"): fd_derivative(x, eps=-1e-3)
    with pytest.raises(ValueError, match="kind must be one of"): transform(x, 0.1, "x_shift")
    with pytest.raises(ValueError, match="kind must be one of"): lie_derivative(x, "x_shift")
    with pytest.raises(ValueError, match="same shape"): solve_generator(x.flatten(1), x.flatten(1)[:, :5])
    A, B, JA, JB, _ = planted_equivariant_data()
    with pytest.raises(ValueError, match="lam must be"): solve_equivariant_map(A, B, JA, JB, -0.1)
    with pytest.raises(ValueError, match="JA must be"): solve_equivariant_map(A, B, JB, JB, 1.)
    with pytest.raises(ValueError, match="too large"): solve_equivariant_map(np.zeros((5, 50)), np.zeros((5, 100)), np.zeros((50, 50)), np.zeros((100, 100)), 1., method="kron")


def test_structure_constants_planted_algebra():
    "sl(2) planted in R^5 (adjoint ⊕ standard, hidden by a random similarity): c recovered to 1e-8, residual 0; a foreign J breaks it."
    from manifold_nb.generators import structure_constants
    H, E, F = (np.array(m, dtype=float) for m in ([[1, 0], [0, -1]], [[0, 1], [0, 0]], [[0, 0], [1, 0]]))
    c_true = np.zeros((3, 3, 3))   # [H, E] = 2E, [H, F] = -2F, [E, F] = H
    for (a, b, k, v) in [(0, 1, 1, 2.), (0, 2, 2, -2.), (1, 2, 0, 1.)]: c_true[a, b, k], c_true[b, a, k] = v, -v
    basis = [H, E, F]
    ad = [np.stack([np.linalg.lstsq(np.stack([m.ravel() for m in basis], 1), (g @ m - m @ g).ravel(), rcond=None)[0] for m in basis], 1)
          for g in basis]                                                  # adjoint representation, 3x3
    rng = np.random.default_rng(3)
    S = rng.normal(size=(5, 5)) + 3*np.eye(5)
    J = [S @ np.block([[a, np.zeros((3, 2))], [np.zeros((2, 3)), g]]) @ np.linalg.inv(S) for a, g in zip(ad, basis)]
    X = rng.normal(size=(25, 5))
    sc = structure_constants(J, X, names=("H", "E", "F"))
    assert np.abs(sc.c - c_true).max() <= 1e-8 and np.nanmax(sc.residual) <= 1e-8 and sc.design_rank == 3
    J[2] = rng.normal(size=(5, 5))
    assert structure_constants(J, X).residual[1, 2] > 0.3   # [E, random] is outside the span
    with pytest.raises(ValueError, match="J_list must hold"): structure_constants(J, X[:, :4])


def test_joint_equivariant_map_planted():
    "Three non-commuting planted generator pairs with a common intertwiner T0: recovered to 1e-8 by CG and Kronecker at every λ."
    A, B, JA, JB, T0 = planted_joint_equivariant_data(seed=4)
    assert np.linalg.norm(JB[0] @ JB[1] - JB[1] @ JB[0]) > 1
    for lam in (0., 0.5, 20.):
        for method in ("cg", "kron"):
            fit = solve_joint_equivariant_map(A, B, JA, JB, lam, weights=[0.5, 1., 3.], ridge=0., method=method, tol=1e-14)
            assert np.abs(fit.T - T0).max() <= 1e-10, (lam, method)
    A, B, JA, JB, _ = planted_joint_equivariant_data(noise=0.3, seed=5)
    for w in (None, [0.5, 1., 3.]):    # the weights must enter both solvers alike
        Tw = solve_joint_equivariant_map(A, B, JA, JB, 5., weights=w, method="kron").T
        fit = solve_joint_equivariant_map(A, B, JA, JB, 5., weights=w, tol=1e-13)
        assert fit.converged and np.abs(fit.T - Tw).max() < 1e-8
    assert np.abs(Tw - solve_joint_equivariant_map(A, B, JA, JB, 5., method="kron").T).max() > 1e-3
    Tk = solve_joint_equivariant_map(A, B, JA, JB, 5., method="kron").T
    T1 = solve_equivariant_map(A, B, JA[0], JB[0], 5., method="kron").T     # one generator only leaves the others broken
    assert equivariance_residual(Tk, JA[2], JB[2]) < 0.2*equivariance_residual(T1, JA[2], JB[2])
    with pytest.raises(ValueError, match="same number of generators"): solve_joint_equivariant_map(A, B, JA, JB[:2], 1.)
    with pytest.raises(ValueError, match="weights must be 3"): solve_joint_equivariant_map(A, B, JA, JB, 1., weights=[1., 1.])


def test_quick_joint_and_robustness_metrics(quick):
    "Joint six-generator map: the penalty lowers every generator's residual; the exp(θJ^A) norm is explained by the spectral abscissa."
    from manifold_nb.transforms import AFF2_BASIS
    out, m = quick
    sw = m["joint_equivariant"]["sweep"]
    assert sw[0]["lam"] == 0 and len(sw) >= 3
    for k in AFF2_BASIS: assert sw[-1][f"equivariance_{k}"] < sw[0][f"equivariance_{k}"]
    r = m["robustness"]
    a, n = np.radians(r["angles_deg"]), np.array(r["expm_norm"])
    bound = np.exp(np.abs(a)*np.where(a > 0, r["spectral_abscissa"], r["spectral_abscissa_negative"]))
    assert np.all(n >= bound*(1 - 1e-6))                              # ‖e^{θJ}‖₂ ≥ e^{|θ|α}
    assert all((e is None) == (nn > r["expm_bound"]) for e, nn in zip(r["expm_error"], n))
    mid = r["angles_deg"].index(0.0)
    assert r["first_order_error"][mid] < 1e-5 and max(r["first_order_error"]) < 10
    ta = m["transformation_accuracy"]
    assert {row["transformation"] for row in ta["rows"]} == set(AFF2_BASIS) and len(ta["rows"]) == 24


def test_quick_augmented_cnn(quick):
    "Rotation-augmented CNN side by side with the plain one: same analysis, and augmentation makes the logits more rotation-invariant."
    from manifold_nb.transforms import AFF2_BASIS
    out, m = quick
    a = m["augmented_cnn"]
    assert a["max_rotation"] > 0 and 0.85 < a["test_accuracy"] <= 1
    pl, au = a["plain"], a["augmented"]
    assert abs(pl["structure_constants"]["error_vs_aff2"] - m["structure_constants"]["features (J^A)"]["error_vs_aff2"]) < 1e-3
    for k in AFF2_BASIS:
        assert abs(pl["local_equivariance"][k]["logits_gain"]["mean"] / m["local_equivariance"]["per_generator"][k]["logits_gain"]["mean"] - 1) < 1e-3
        assert len(au["structure_constants"]["closure_residual"]) == 15
    assert au["local_equivariance"]["rotation"]["logits_gain"]["high"] < pl["local_equivariance"]["rotation"]["logits_gain"]["low"]
    assert (out / "figures" / "augmented_structure_constants.png").exists()


def test_document_table_and_figures_inline(quick, document_report):
    "The executed notebook shows its figures and a table with the document's numbers beside ours; every figure has alt text."
    assert len(quick[1]["figures"]) >= 8
    document_report(quick, len(quick[1]["figures"]))
