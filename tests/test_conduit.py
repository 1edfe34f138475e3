"""Known-answer tests of `manifold_nb.conduit` (the FL/Laguerre eigen-solver with friction/settle telemetry)."""
import math

import pytest
import torch

from manifold_nb.conduit import ConduitPacket, FLEighConduit, fl_conduit, fl_eigh


def rel_err(A, L):
    "max |L - eigvalsh(A)| / max|lambda| per matrix, against float64 LAPACK."
    ref = torch.linalg.eigvalsh(A.double())
    return (L.double() - ref).abs().amax(-1) / ref.abs().amax(-1).clamp_min(1e-300)


def residual(A, pk):
    "max_i ||A v_i - lambda_i v_i|| / max|lambda| per matrix."
    V, L = pk.eigenvectors.double(), pk.eigenvalues.double()
    return (A.double() @ V - V * L[..., None, :]).norm(dim=-2).amax(-1) / L.abs().amax(-1).clamp_min(1e-300)


def rotated(spectrum, n_mat=300, seed=0):
    "Random orthogonal rotations Q diag(spectrum) Qᵀ in float64."
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n_mat, 4, 4, dtype=torch.float64, generator=g))
    return Q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ Q.mT


def sphere_gram(n_mat=2000, seed=0, scales=(2.5, 1.2, 0.8, 0.5)):
    "Gram matrices of 48x4 matrices with unit rows (the SVAE's M), float32."
    g = torch.Generator().manual_seed(seed)
    M = torch.nn.functional.normalize(torch.randn(n_mat, 48, 4, generator=g) * torch.tensor(scales), dim=-1)
    return M.mT @ M


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_spd_matches_eigh(dtype):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(4000, 4, 4, dtype=torch.float64, generator=g)
    A = (X @ X.mT + 1e-3 * torch.eye(4, dtype=torch.float64)).to(dtype)
    pk = fl_conduit(A)
    assert isinstance(pk, ConduitPacket)
    assert pk.eigenvalues.dtype == dtype and pk.eigenvectors.dtype == dtype
    assert rel_err(A, pk.eigenvalues).max() < 1e-6
    assert residual(A, pk).max() < 1e-5
    V = pk.eigenvectors.double()
    assert (V.mT @ V - torch.eye(4, dtype=torch.float64)).abs().max() < 1e-5
    assert (pk.eigenvalues[:, 1:] >= pk.eigenvalues[:, :-1]).all()
    # sign convention: the largest-|.| entry of every eigenvector is positive
    piv = V.abs().argmax(-2, keepdim=True)
    assert (V.gather(-2, piv) > 0).all()


def test_diagonal_known_answer():
    A = torch.diag(torch.tensor([4., 1., 3., 2.], dtype=torch.float64))[None]
    pk = fl_conduit(A)
    torch.testing.assert_close(pk.eigenvalues[0], torch.tensor([1., 2., 3., 4.], dtype=torch.float64))
    # eigenvectors are the matching unit vectors, with positive sign
    torch.testing.assert_close(pk.eigenvectors[0].abs(), torch.eye(4, dtype=torch.float64)[:, [1, 3, 2, 0]])
    # characteristic polynomial of A/s, s = ||A||_F / 2 = sqrt(30)/2: roots are lambda/s
    s = math.sqrt(30) / 2
    r = torch.tensor([1., 2., 3., 4.], dtype=torch.float64) / s
    e1, e2 = r.sum(), (r.sum() ** 2 - (r ** 2).sum()) / 2
    torch.testing.assert_close(pk.char_coeffs[0, 3], -e1)
    torch.testing.assert_close(pk.char_coeffs[0, 2], e2)
    torch.testing.assert_close(pk.char_coeffs[0, 0], r.prod())


@pytest.mark.parametrize("spectrum", [[1, 1 + 1e-3, 1 + 2e-3, 3], [1, 1 + 1e-6, 1 + 2e-6, 1 + 3e-6],
                                      [1, 1, 2, 3], [2, 2, 2, 2], [0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 0, 5],
                                      [1e-3, 1, 1, 1]])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clustered_repeated_zero(spectrum, dtype):
    A = rotated(spectrum).to(dtype)
    pk = fl_conduit(A)
    for f in ("eigenvalues", "eigenvectors", "friction", "settle", "char_coeffs", "refinement_residual"):
        assert torch.isfinite(getattr(pk, f)).all(), f
    assert rel_err(A, pk.eigenvalues).max() < 1e-6
    assert residual(A, pk).max() < 1e-5
    V = pk.eigenvectors.double()
    assert (V.mT @ V - torch.eye(4, dtype=torch.float64)).abs().max() < 1e-5


def test_model_like_gram_matrices():
    G = sphere_gram()
    pk = fl_conduit(G)
    assert rel_err(G, pk.eigenvalues).max() < 1e-6
    assert residual(G, pk).max() < 1e-5
    torch.testing.assert_close(pk.eigenvalues.sum(-1), torch.full((len(G),), 48.), rtol=1e-5, atol=1e-4)  # trace
    assert pk.refined.double().mean() < 0.01          # the fast path certifies almost all of them


def test_telemetry_semantics_and_ordering():
    G = sphere_gram(3000)
    pk = fl_conduit(G)
    # last Laguerre slot = linear polynomial, p' = 1: friction 5/(1+1e-8), settle <= 1; it is the largest eigenvalue
    torch.testing.assert_close(pk.friction[:, 3], torch.full((3000,), 5 / (1 + 1e-8)))
    assert (pk.extraction_order[:, 3] == 3).all() and (pk.settle[:, 3] <= 1).all()
    assert (pk.friction >= 0).all() and ((pk.settle >= 0) & (pk.settle <= 5)).all()
    assert (pk.settle == pk.settle.round()).all()
    # solving a reversed batch order changes nothing per matrix
    pk_rev = fl_conduit(G.flip(0))
    torch.testing.assert_close(pk_rev.friction.flip(0), pk.friction)
    # extraction_order is a permutation of 0..3 per matrix, aligned with the ascending eigenvalues
    assert (pk.extraction_order.sort(-1).values == torch.arange(4)).all()
    # friction is scale-invariant (Frobenius scaling); a power of two keeps A/s bit-identical
    torch.testing.assert_close(fl_conduit(4 * G).friction, pk.friction, rtol=0, atol=0)
    # float64 telemetry agrees with the float32 reference path on well-separated spectra
    pk64 = fl_conduit(G.double(), laguerre_dtype=torch.float64)
    rel = ((pk64.friction - pk.friction.double()).abs() / pk64.friction)
    assert rel.median() < 1e-4


def test_telemetry_order_follows_eigenvalues_not_slots():
    # a diagonal matrix with a descending diagonal: the start guesses are the *sorted* diagonal, so slot 0 still
    # finds the smallest root; friction[..., 3] (largest eigenvalue) is the linear-slot constant
    A = torch.diag(torch.tensor([9., 5., 2., 1.]))[None]
    pk = fl_conduit(A)
    torch.testing.assert_close(pk.eigenvalues[0], torch.tensor([1., 2., 5., 9.]))
    torch.testing.assert_close(pk.friction[0, 3], torch.tensor(5 / (1 + 1e-8)))
    assert pk.friction[0, 0] > pk.friction[0, 3]


def test_batch_shapes_and_wrappers():
    G = sphere_gram(60).reshape(3, 20, 4, 4)
    pk = fl_conduit(G, chunk_size=7, workers=2)        # odd chunking + threads give identical results
    pk1 = fl_conduit(G, chunk_size=60, workers=1)
    assert pk.eigenvalues.shape == (3, 20, 4) and pk.eigenvectors.shape == (3, 20, 4, 4)
    assert pk.friction.shape == (3, 20, 4) and pk.refinement_residual.shape == (3, 20)
    torch.testing.assert_close(pk.friction, pk1.friction, rtol=0, atol=0)
    torch.testing.assert_close(pk.eigenvalues, pk1.eigenvalues, rtol=0, atol=0)
    L, V = fl_eigh(G)
    torch.testing.assert_close(L, pk.eigenvalues)
    assert FLEighConduit()(G).friction.shape == (3, 20, 4)


def test_bad_input_raises():
    G = sphere_gram(4)
    with pytest.raises(ValueError, match="A must be symmetric"): fl_conduit(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="square"): fl_conduit(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="square"): fl_conduit(torch.randn(4))
    with pytest.raises(ValueError, match="A must be finite"): fl_conduit(torch.full((2, 4, 4), float("nan")))
    bad = G.clone(); bad[1, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="A must be finite"): fl_conduit(bad)
    with pytest.raises(ValueError, match="float32 or float64"): fl_conduit(torch.eye(4, dtype=torch.int64)[None])
    with pytest.raises(ValueError, match="laguerre_iters must be a positive integer"): fl_conduit(G, laguerre_iters=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"): fl_conduit(G, chunk_size=0)
    with pytest.raises(ValueError, match="laguerre_dtype must be one of"): fl_conduit(G, laguerre_dtype=torch.float16)


def test_analytic_friction_known_answer():
    "Eigenvalues (1, 2, 3, 4) normalise to λ·2/√30: f_0 = 5/(1·2·3·(2/√30)³) = 5·30^1.5/48; the largest root gets 5."
    from manifold_nb.conduit import analytic_friction
    f = analytic_friction(torch.tensor([3., 1., 4., 2.]))
    c = 2 / math.sqrt(30)
    want = [5 / (6 * c ** 3), 5 / (2 * c ** 2), 5 / c, 5.]
    assert torch.allclose(f, torch.tensor(want, dtype=torch.float64), rtol=1e-7)
    assert torch.allclose(analytic_friction(torch.tensor([3., 1., 4., 2.]) * 17), f, rtol=1e-12)   # scale-invariant


def test_solver_friction_on_diagonal_matrices_is_the_analytic_value():
    "A diagonal matrix starts Laguerre at its eigenvalues, so the telemetry equals the converged formula (to the 1e-4 guess spread)."
    from manifold_nb.conduit import analytic_friction
    lam = torch.tensor([[1., 2., 3., 4.], [0.2, 1., 1.5, 6.], [1., 3., 3.2, 9.]], dtype=torch.float64)
    f_solver = fl_conduit(torch.diag_embed(lam)).friction.double()
    f_formula = analytic_friction(lam)
    assert ((f_solver - f_formula).abs() / f_formula).max() < 2e-3
