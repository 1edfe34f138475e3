"""Unit tests of manifold_nb.models.svae: patch layout, the SVD-through-Gram contract, input validation, training, caching."""
import pytest
import torch
import torch.nn.functional as F

from manifold_nb.models.svae import (PatchSVAE, SVAE_ARCH, FRECKLES_ARCH, extract_patches, stitch_patches, gram_svd,
                              gram_from_svd, omega_noise, train_svae, trained_svae, analysis_set,
                              svae_maps, n_params, cifar10_counts, HELDOUT_OFFSET, SVAE_PROFILES)


@pytest.mark.parametrize("shape,ps", [((2, 3, 64, 64), 4), ((1, 3, 12, 20), 4), ((3, 1, 8, 8), 2), ((2, 3, 32, 32), 16)])
def test_extract_stitch_exact_inverse(shape, ps):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    p, gh, gw = extract_patches(x, ps)
    assert p.shape == (shape[0], (shape[2] // ps) * (shape[3] // ps), shape[1] * ps * ps)
    assert torch.equal(stitch_patches(p, gh, gw, ps, shape[1]), x)              # bit-exact
    q = torch.randn_like(p)
    assert torch.equal(extract_patches(stitch_patches(q, gh, gw, ps, shape[1]), ps)[0], q)


def test_patch_layout_matches_documented_index():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    p, gh, gw = extract_patches(x, 4)
    assert (gh, gw) == (2, 3)
    for b, r, c, ch, i, j in [(0, 0, 0, 0, 0, 0), (1, 1, 2, 2, 3, 1), (0, 1, 0, 1, 2, 3)]:
        assert p[b, r * gw + c, ch * 16 + i * 4 + j] == x[b, ch, r * 4 + i, c * 4 + j]


def test_bad_inputs_raise_clear_errors():
    m = PatchSVAE(**SVAE_ARCH)
    with pytest.raises(ValueError, match=r"multiples of patch_size=4; got 63×64"): m(torch.rand(1, 3, 63, 64))
    with pytest.raises(ValueError, match="NaN"): m(torch.full((1, 3, 64, 64), float("nan")))
    x = torch.rand(1, 3, 64, 64); x[0, 1, 5, 5] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"): m(x)
    with pytest.raises(ValueError, match="3 channels; got 1"): m(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="4-D tensor"): m(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="multiples of patch_size=4"): extract_patches(torch.rand(1, 3, 64, 30), 4)
    with pytest.raises(ValueError, match="patches must have shape"): stitch_patches(torch.rand(1, 10, 48), 3, 3, 4)
    with pytest.raises(ValueError, match="profile must be one of"): trained_svae("medium")
    with pytest.raises(ValueError, match="n_test must be in"): analysis_set(n_test=cifar10_counts()[1] + 1)   # one more than found
    with pytest.raises(ValueError, match="noise_frac must be in"): train_svae(m, torch.rand(4, 3, 8, 8), noise_frac=1.5)
    with pytest.raises(ValueError, match="which must be one of"): gram_from_svd({}, which="T")


@pytest.fixture(scope="module")
def contract():
    torch.manual_seed(0)
    m = PatchSVAE(**SVAE_ARCH).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad(): return m, x, m(x)


def test_output_contract_shapes(contract):
    m, x, out = contract
    svd = out["svd"]
    assert out["recon"].shape == (3, 3, 64, 64)
    assert svd["S"].shape == svd["S_orig"].shape == (3, 256, 4)
    assert svd["U"].shape == svd["M"].shape == (3, 256, 48, 4)
    assert svd["Vt"].shape == (3, 256, 4, 4)
    assert all(v.dtype == torch.float32 for v in svd.values())


def test_rows_on_unit_sphere_and_trace(contract):
    _, _, out = contract
    M = out["svd"]["M"]
    assert torch.allclose(M.norm(dim=-1), torch.ones(M.shape[:-1]), atol=1e-5)
    assert torch.allclose(out["svd"]["S_orig"].pow(2).sum(-1), torch.full((3, 256), 48.0), atol=1e-3)


def test_singular_values_sorted_nonnegative_and_exact(contract):
    _, _, out = contract
    S, M = out["svd"]["S_orig"], out["svd"]["M"]
    assert (S >= 0).all() and (S.diff(dim=-1) <= 0).all()
    assert torch.allclose(S, torch.linalg.svdvals(M.double()).float(), atol=1e-5)


def test_usvt_reconstructs_M(contract):
    _, _, out = contract
    U, S, Vt, M = (out["svd"][k] for k in ("U", "S_orig", "Vt", "M"))
    assert torch.allclose((U * S.unsqueeze(-2)) @ Vt, M, atol=1e-5)
    assert torch.allclose(U.mT @ U, torch.eye(4).expand(3, 256, 4, 4), atol=1e-4)
    assert torch.allclose(Vt @ Vt.mT, torch.eye(4).expand(3, 256, 4, 4), atol=1e-5)


def test_gram_svd_known_answer_and_plugin_solver():
    M = torch.zeros(2, 6, 3); M[:, 0, 0], M[:, 1, 1], M[:, 2, 2] = 3.0, 2.0, 1.0   # singular values 3, 2, 1
    U, S, Vt = gram_svd(M)
    assert torch.allclose(S, torch.tensor([[3.0, 2.0, 1.0]] * 2), atol=1e-6)
    calls = []
    def solver(G): calls.append(G.dtype); return torch.linalg.eigh(G)
    U2, S2, _ = gram_svd(M, solver)
    assert calls == [torch.float64] and torch.allclose(S2, S)


def test_gram_from_svd(contract):
    _, _, out = contract
    G = gram_from_svd(out["svd"], "S_orig"); M = out["svd"]["M"]
    assert torch.allclose(G, M.mT @ M, atol=1e-4)
    Gc = gram_from_svd(out["svd"], "S")
    S2 = out["svd"]["S"].pow(2).sort(-1, descending=True).values   # the coordinated S need not stay sorted
    assert torch.allclose(torch.linalg.eigvalsh(Gc.double()).flip(-1).float(), S2, rtol=1e-4, atol=1e-4)


def test_gradients_flow_through_svd_and_parameter_counts():
    assert n_params(PatchSVAE(**SVAE_ARCH)) == 195_683
    assert n_params(PatchSVAE(**FRECKLES_ARCH)) == 2_557_539
    torch.manual_seed(0)
    m = PatchSVAE(**SVAE_ARCH); x = torch.rand(2, 3, 16, 16)
    F.mse_loss(m(x)["recon"], x).backward()
    g = m.enc_in.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0     # the encoder trains through the SVD


def test_noise_mixture():
    z = omega_noise(48, 32, seed=0)
    assert z.shape == (48, 3, 32, 32) and torch.isfinite(z).all() and z.abs().max() <= 4
    assert torch.equal(z, omega_noise(48, 32, seed=0)) and not torch.equal(z, omega_noise(48, 32, seed=1))


# (training reduces the error: tested once, under train_svae in nbs/models/svae.ipynb)


def test_trained_quick_model_is_cached_and_shared():
    m1 = trained_svae("quick", progress=False)
    m2 = trained_svae("quick", progress=False)
    assert m2.cache_info["hit"] and m2.cache_info["key"] == m1.cache_info["key"]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()): assert torch.equal(a, b)
    assert m1.history["images_seen"] == SVAE_PROFILES["quick"]["n_train"]
    X, y, is_test = analysis_set(n_test=4, n_heldout=4)
    assert X.shape == (8, 3, 64, 64) and is_test.tolist() == [True] * 4 + [False] * 4
    maps = svae_maps(m2, X, batch_size=4, progress=False)
    assert maps.error.shape == (8, 16, 16) and maps.gram.shape == (8, 16, 16, 4, 4)
    assert torch.allclose(maps.error.mean((1, 2)), maps.mse, rtol=1e-5)
    assert SVAE_PROFILES["full"]["n_train"] <= HELDOUT_OFFSET


def _write_batch(path, data, labels):
    "A CIFAR-10 python batch file (the pickled dict torchvision reads), written atomically."
    import pickle
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f: pickle.dump({"data": data, "labels": list(labels)}, f)
    tmp.replace(path)


@pytest.fixture(scope="module")
def full_cifar(tmp_path_factory):
    """A CIFAR-10 folder of the real size (5 training batches and a test batch of 10,000 rows each), built by
    repeating the local files' rows; returns (root, training rows (50000, 3072), test rows (10000, 3072), their labels)."""
    import pickle
    import numpy as np
    from manifold_nb.data import find_root
    src = find_root("cifar10") / "cifar-10-batches-py"
    load = lambda p: pickle.load(open(p, "rb"), encoding="latin1")
    train = [load(p) for p in sorted(src.glob("data_batch_*"))]
    tr_x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in train])
    tr_y = np.concatenate([np.asarray(b["labels"]) for b in train])
    te = load(src / "test_batch"); te_x, te_y = np.asarray(te["data"], dtype=np.uint8), np.asarray(te["labels"])
    rep = lambda a, n: np.resize(a, (n,) + a.shape[1:])          # repeat rows cyclically up to n
    tr_x, tr_y, te_x, te_y = rep(tr_x, 50_000), rep(tr_y, 50_000), rep(te_x, 10_000), rep(te_y, 10_000)
    root = tmp_path_factory.mktemp("cifar_full"); d = root / "cifar-10-batches-py"; d.mkdir()
    for k in range(5): _write_batch(d / f"data_batch_{k + 1}", tr_x[k * 10_000:(k + 1) * 10_000], tr_y[k * 10_000:(k + 1) * 10_000])
    _write_batch(d / "test_batch", te_x, te_y)
    return root, tr_x, te_x, tr_y, te_y


def test_analysis_set_at_full_cifar_size(full_cifar):
    root, tr_x, te_x, tr_y, te_y = full_cifar
    assert cifar10_counts(root) == (50_000, 10_000)
    X, y, is_test = analysis_set(n_test=10_000, n_heldout=8, data_root=root)
    assert X.shape == (10_008, 3, 64, 64) and int(is_test.sum()) == 10_000 and not is_test[-8:].any()
    assert y[:10_000].tolist() == te_y.tolist() and y[10_000:].tolist() == tr_y[HELDOUT_OFFSET:HELDOUT_OFFSET + 8].tolist()
    to64 = lambda rows: F.interpolate(torch.from_numpy(rows).float().div(255).reshape(-1, 3, 32, 32), size=64,
                                      mode="bilinear", align_corners=False).clamp(0, 1)
    assert torch.allclose(X[[0, 9_999]], to64(te_x[[0, 9_999]]), atol=1e-6)
    assert torch.allclose(X[10_000:], to64(tr_x[HELDOUT_OFFSET:HELDOUT_OFFSET + 8]), atol=1e-6)   # held-out rows
    with pytest.raises(ValueError, match=r"n_test must be in \[0, 10000\] \(the CIFAR-10 test images found\); got 10001"):
        analysis_set(n_test=10_001, n_heldout=0, data_root=root)
    with pytest.raises(ValueError, match=r"n_heldout must be in \[0, 25000\]"):
        analysis_set(n_test=0, n_heldout=25_001, data_root=root)


def test_analysis_set_counts_come_from_the_files(full_cifar, tmp_path):
    root, tr_x, te_x, tr_y, te_y = full_cifar
    d = tmp_path / "cifar-10-batches-py"; d.mkdir()                       # two training batches: nothing held out
    for k in range(2): _write_batch(d / f"data_batch_{k + 1}", tr_x[k * 10_000:(k + 1) * 10_000], tr_y[k * 10_000:(k + 1) * 10_000])
    _write_batch(d / "test_batch", te_x[:300], te_y[:300])
    assert cifar10_counts(tmp_path) == (20_000, 300)
    with pytest.raises(ValueError, match=r"HELDOUT_OFFSET=25,000, but only 20,000 CIFAR-10 training images were found"):
        analysis_set(n_test=10, n_heldout=1, data_root=tmp_path)
    X, y, is_test = analysis_set(n_test=300, n_heldout=0, data_root=tmp_path)
    assert X.shape == (300, 3, 64, 64) and is_test.all()
    with pytest.raises(ValueError, match=r"n_test must be in \[0, 300\]"): analysis_set(n_test=301, n_heldout=0, data_root=tmp_path)
    with pytest.raises(TypeError, match="n_test must be an int; got float"): analysis_set(n_test=3.0, data_root=tmp_path)


def _with_singular_values(s, batch=2, seed=0):
    "float64 (batch, 48, 4) matrices Q diag(s) Wᵀ with orthonormal Q (48x4) and W (4x4): singular values exactly s."
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(batch, 48, 4, dtype=torch.float64, generator=g))[0]
    W = torch.linalg.qr(torch.randn(batch, 4, 4, dtype=torch.float64, generator=g))[0]
    return (Q * torch.tensor(s, dtype=torch.float64)) @ W.mT


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_gram_svd_gradient_at_repeated_singular_values_issue_case(dtype, tol):
    # issue 11.5: M (1, 48, 4) with orthonormal columns, loss <U S Vᵀ, R>; U S Vᵀ = M, so the gradient is exactly R
    # (before the fix: relative error 7.4 in float32, NaN in float64)
    g = torch.Generator().manual_seed(0)
    M = torch.linalg.qr(torch.randn(1, 48, 4, dtype=torch.float64, generator=g))[0].to(dtype).requires_grad_()
    R = torch.randn(1, 48, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
    U, S, Vt = gram_svd(M)
    ((U * S[..., None, :]) @ Vt * R).sum().backward()
    assert torch.isfinite(M.grad).all()
    assert ((M.grad - R).norm() / R.norm()).item() < tol


@pytest.mark.parametrize("s", [(1., 1., 1., 1.), (2., 1., 1., .5), (1., 1 + 1e-5, 1 + 1e-4, 2.), (1., 1 + 1e-3, 1 + 2e-3, 2.)])
def test_gram_svd_float32_gradient_near_repeated(s):
    M64 = _with_singular_values(s, batch=64)
    M = M64.float().requires_grad_(); R = torch.randn(64, 48, 4, generator=torch.Generator().manual_seed(2))
    U, S, Vt = gram_svd(M)
    ((U * S[..., None, :]) @ Vt * R).sum().backward()
    assert ((M.grad - R).norm(dim=(-2, -1)) / R.norm(dim=(-2, -1))).max().item() < 1e-6


_R = torch.randn(2, 48, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
_W = torch.tensor([1., -2., .5, 3.], dtype=torch.float64)
_LOSSES = {
    "usv_linear": lambda M: ((lambda U, S, Vt: (U * S[..., None, :]) @ Vt * _R)(*gram_svd(M))).sum(),
    "usv_cubic": lambda M: ((lambda U, S, Vt: ((U * S[..., None, :]) @ Vt) ** 3 * _R)(*gram_svd(M))).sum(),
    "usv_norms": lambda M: ((lambda U, S, Vt: ((U * S[..., None, :]) @ Vt).norm(dim=-1))(*gram_svd(M))).sum(),
    "s_symmetric": lambda M: (gram_svd(M)[1] ** 3).sum() + gram_svd(M)[1].log().sum(),
    "s_weighted": lambda M: (gram_svd(M)[1] * _W).sum(),          # not symmetric: only where S is not repeated
}
_SPECTRA = {"repeated": (1., 1., 1., 1.), "repeated_pair": (2., 1., 1., .5), "near_repeated": (1., 1 + 1e-3, 1 + 2e-3, 2.),
            "generic": (3., 2., 1.5, 1.)}


@pytest.mark.parametrize("spectrum", list(_SPECTRA))
@pytest.mark.parametrize("loss", list(_LOSSES))
def test_gram_svd_gradcheck(spectrum, loss):
    if loss == "s_weighted" and spectrum.startswith("repeated"): pytest.skip("a weighted sum of sorted S has a kink there")
    M = _with_singular_values(_SPECTRA[spectrum]).requires_grad_()
    assert torch.autograd.gradcheck(_LOSSES[loss], (M,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gram_svd_gradient_of_other_functions_is_the_textbook_one():
    # away from degeneracy the gauge-dependent term is kept: a function of U diag(c·S) Vᵀ (what the SVAE decodes after
    # its cross-attention) and a function of U and Vt alone pass gradcheck and agree with autograd through torch.linalg.svd
    c = torch.tensor([1.1, .9, 1.2, .8], dtype=torch.float64)
    coord = lambda M: ((lambda U, S, Vt: (U * (S * c)[..., None, :]) @ Vt * _R)(*gram_svd(M))).sum()
    for s in (_SPECTRA["generic"], _SPECTRA["near_repeated"]):
        assert torch.autograd.gradcheck(coord, (_with_singular_values(s).requires_grad_(),), eps=1e-7, atol=1e-5, rtol=1e-5)
    M = _with_singular_values(_SPECTRA["generic"]).requires_grad_()
    f = lambda U, Vt: (U ** 2 * _R).sum() + (Vt ** 2 * _R[:, :4]).sum()      # invariant to each column's sign
    ours = torch.autograd.grad(f(*gram_svd(M)[::2]), M)[0]
    U, _, Vt = torch.linalg.svd(M, full_matrices=False)
    assert torch.allclose(ours, torch.autograd.grad(f(U, Vt), M)[0], rtol=1e-9, atol=1e-12)


def test_variants_override_the_profile(monkeypatch):
    "Each variant changes only its own choices; epochs_x multiplies the profile's epochs (rounded, at least 1)."
    import manifold_nb.models.svae as svae
    seen = {}
    monkeypatch.setattr(svae, "cached_model", lambda name, config, build, train, **kw: seen.setdefault("cfg", config))
    monkeypatch.setattr(svae, "load_cifar10", lambda split, n, offset, root, size: (torch.zeros(n, 3, 8, 8), torch.zeros(n, dtype=torch.long)))
    def cfg(profile, variant):
        seen.clear(); svae.trained_svae(profile, variant=variant); return seen["cfg"]
    base = cfg("full", None)
    assert base == dict(arch=svae.SVAE_ARCH, **svae.SVAE_PROFILES["full"])
    assert cfg("full", "2× training") == dict(base, epochs=12)
    assert cfg("full", "1/3 training") == dict(base, epochs=2)
    assert cfg("full", "noise only") == dict(base, noise_frac=1.0, epochs=8)
    assert cfg("reduced", "1/3 training")["epochs"] == 1
    assert cfg("reduced", "4× training")["epochs"] == 4 * svae.SVAE_PROFILES["reduced"]["epochs"]
    assert cfg("full", "width 256")["arch"] == dict(svae.SVAE_ARCH, hidden=256)
    with pytest.raises(ValueError, match="variant must be one of"): svae.trained_svae("full", variant="bigger")


def test_noise_only_training_ignores_the_images():
    "noise_frac=1: the batches are replaced by omega_noise, so two image sets of the same size give identical weights."
    torch.manual_seed(0); a = PatchSVAE(**SVAE_ARCH); b = PatchSVAE(**SVAE_ARCH); b.load_state_dict(a.state_dict())
    h = train_svae(a, torch.rand(32, 3, 16, 16), epochs=1, batch_size=16, noise_frac=1.0, progress=False)
    train_svae(b, torch.zeros(32, 3, 16, 16), epochs=1, batch_size=16, noise_frac=1.0, progress=False)
    assert (h["images_seen"], h["noise_seen"], h["steps"]) == (0, 32, 2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
