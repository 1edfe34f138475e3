"""Symmetry discovery notebook (nbs/05_symmetry_discovery.ipynb): quick profile end to end, plus input validation."""
import math

import pytest
import torch


@pytest.fixture(scope="module")
def sym(run_notebook):
    return run_notebook("symmetry_discovery", seed=0)


def test_hdf5_layout(sym):
    _, m = sym
    h = m["hdf5"]
    assert h["train_shapes"] == {"1": [150, 12, 1, 28, 28], "2": [150, 12, 1, 28, 28]}
    assert h["attrs"]["angles"] == list(range(0, 360, 30))
    assert h["attrs"]["split"] == "train" and h["attrs"]["seed"] == 0


def test_vaes_learn(sym):
    _, m = sym
    for name, z in m["vae_zoo"].items():
        # 784*log(2) = 543 nats is a decoder that ignores the data; trained VAEs must do far better
        assert 80 < z["neg_elbo"] < 400, (name, z)
        assert 0 < z["recon_mse"] < 0.1, (name, z)
    # the e2cnn encoder is exactly equivariant for quarter turns, which map the pixel grid onto itself
    err = m["equivariant_latent_rel_error"]
    assert max(err["90"], err["180"], err["270"]) < 1e-3, err


def test_supervised_rotation(sym):
    _, m = sym
    s = m["supervised"]
    assert len(s["single_step_mse"]) == len(s["composed_11_step_mse"]) == 11
    # one learned step is about as good as reconstructing the truly rotated image, and beats not rotating
    assert s["single_step_mse"][0] < 1.1 * s["vae_floor_mse"][0]
    assert s["single_step_mse"][0] < s["no_transform_mse"][0]
    # the orbit-trained map stays near the VAE floor at every step
    assert s["orbit_latent_mse_mean"] < 1.15 * s["vae_floor_mse_mean"] < s["no_transform_mse_mean"]


def test_known_answer_flow(sym):
    _, m = sym
    ka = m["known_answer"]
    assert ka["cos_2d"] >= 0.99                      # planted rotation recovered
    assert min(ka["so2xso2_span_share"]) > 0.97      # both planted rotations in the span of two generators
    assert ka["random_floor_2d"] == pytest.approx(2 / math.pi)


def test_oracle_and_learned_flow(sym):
    _, m = sym
    f = m["flows"]["small_conv"]
    assert f["oracle_accuracy"] > 0.8 > f["chance"]
    assert f["final_losses"]["normalization"] < 0.1   # non-trivial, unit-norm field
    # the learned flow is aligned with the observed latent direction of rotation well above random fields
    assert f["best_abs_cos"] > f["random_flow_best_abs_cos"] + 0.15
    assert f["best_abs_cos"] > f["isotropic_abs_cos"] + 0.1


def test_invariant_classifier(sym):
    _, m = sym
    inv = m["invariant_classifier"]
    for k in ["plain", "orbit_average", "orbit_pool", "orbit_pool_all_starts", "equivariant_invariants", "oracle_all_angles"]:
        assert len(inv[k]["accuracy_per_angle"]) == 12
        assert inv[k]["consistency_per_angle"][0] == 1.0
        assert inv[k]["min_accuracy"] == min(inv[k]["accuracy_per_angle"]) and inv[k]["trained_on"]
    # trained upright only: the plain classifier degrades with the angle, orbit averaging makes it (nearly) invariant
    assert inv["orbit_average"]["mean_accuracy"] > inv["plain"]["mean_accuracy"] + 0.05
    assert min(inv["orbit_average"]["accuracy_per_angle"]) > 0.8
    assert inv["orbit_pool"]["mean_accuracy"] > inv["plain"]["mean_accuracy"] + 0.05
    # trained on orbits started from every stored training angle: still invariant by construction, and better than plain
    assert "every start" in inv["orbit_pool_all_starts"]["trained_on"]
    assert inv["orbit_pool_all_starts"]["mean_accuracy"] > inv["plain"]["mean_accuracy"] + 0.05


def test_figures(sym):
    out, m = sym
    for name in ["rotated_mnist", "vae_latents", "vae_reconstructions", "supervised_stepwise_error", "supervised_sequences",
                 "flow_streamlines", "flow_decoded", "prediction_consistency"]:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name


def test_bad_inputs():
    from manifold_nb.symmetry import rotation_angles, check_digits, rotated_mnist_file
    from manifold_nb.models.vae import make_vae
    with pytest.raises(ValueError, match="angle_step"): rotation_angles(25)
    with pytest.raises(ValueError, match="digits must be"): check_digits([1, 10])
    with pytest.raises(ValueError, match="digits must be"): rotated_mnist_file([-1, 2])
    with pytest.raises(ValueError, match="latent_dim must be one of"): make_vae("small_conv", 8)


def test_flow_losses_known_values():
    from manifold_nb.symmetry import LatentFlow, RadialOracle, flow_losses, annulus_points, block_rotation_fields
    # a flow network whose output is exactly the rotation field has zero normalisation loss and tiny invariance loss
    class Exact(LatentFlow):
        def forward(self, z): return block_rotation_fields(z)
    z = annulus_points(512, 2, seed=1)
    ls = flow_losses(Exact(2, 1), RadialOracle(), z, eps=1e-3)
    assert ls["normalization"].item() < 1e-10 and ls["invariance"].item() < 1e-3
    # a radial (outward) field changes the oracle a lot
    class Radial(LatentFlow):
        def forward(self, z): return (z / z.norm(dim=1, keepdim=True))[:, None]
    assert flow_losses(Radial(2, 1), RadialOracle(), z, eps=1e-3)["invariance"].item() > 1.0


def test_orbit_classifier_weight_decay():
    from manifold_nb.symmetry import latent_orbits, train_orbit_classifier
    from manifold_nb.models.vae import rotate_latent_blocks
    T = lambda z: rotate_latent_blocks(z, 30.)
    torch.manual_seed(0)
    o, y = latent_orbits(T, torch.randn(64, 16), 12), torch.randint(0, 3, (64,))
    sq = lambda m: sum(p.pow(2).sum() for p in m.parameters()).item()
    plain = train_orbit_classifier(o, y, [0, 1, 2], epochs=20)
    decayed = train_orbit_classifier(o, y, [0, 1, 2], epochs=20, weight_decay=10.)
    assert sq(decayed) < 0.9 * sq(plain)              # AdamW weight decay shrinks the weights
    with torch.no_grad():                              # pooled over the orbit: any start gives the same logits
        assert torch.allclose(decayed(o), decayed(o.roll(5, dims=1)), atol=1e-5)
