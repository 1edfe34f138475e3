"""Known answers for manifold_nb.transforms: the one vocabulary of one-parameter image groups."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from manifold_nb.transforms import (TRANSFORMS, AFF2_BASIS, aff2_structure_constants, homogeneous_generator, check_images, fd_derivative, lie_derivative, operator_generator, orbit,
                                    source_map, transform, transform_affine, velocity_field)


def rel(a, b): return ((a - b).norm()/b.norm()).item()


def zero_border(n=4, size=28, seed=0):
    "Random images with a zero border (scipy's mode='constant' drops samples a round-off outside the image)."
    x = torch.rand(n, 1, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.pad(x[..., 3:-3, 3:-3], (3, 3, 3, 3))


@pytest.mark.parametrize("interpolation", ["bilinear", "spline"])
def test_quarter_turn_is_rot90_counter_clockwise(interpolation):
    x = zero_border()
    y = transform(x, math.pi/2, "rotation", interpolation)
    assert (y - torch.rot90(x, 1, (-2, -1))).abs().max() < 1e-5        # k=1 over (rows, cols): counter-clockwise on screen
    assert (y - torch.rot90(x, -1, (-2, -1))).abs().max() > 0.1


def test_exact_degrees():
    "radians(30) is kornia's rotate by exactly 30.0 degrees: degrees are rounded once, from float64 (not 30.000002)."
    import kornia.geometry.transform as KT
    x = torch.rand(2, 1, 28, 28)
    for deg in (30., -7.5, 120.):
        assert torch.equal(transform(x, math.radians(deg)), KT.rotate(x, torch.full((2,), deg)))


def test_shift_directions():
    x = zero_border()
    assert (transform(x, 2., "shift_x")[..., 2:] - x[..., :-2]).abs().max() < 1e-6      # right
    assert (transform(x, 2., "shift_y", "spline")[..., 2:, :] - x[..., :-2, :]).abs().max() < 1e-10   # down


def test_spline_is_scipy_image_by_image():
    x = zero_border(5, seed=1); imgs = x[:, 0].numpy()
    for deg in (1., -12.5):
        np.testing.assert_allclose(transform(x, math.radians(deg), interpolation="spline")[:, 0].numpy(),
                                   np.stack([ndimage.rotate(i, deg, reshape=False) for i in imgs]), atol=1e-10)
    np.testing.assert_allclose(transform(x, 0.7, "shift_x", "spline")[:, 0].numpy(),
                               np.stack([ndimage.shift(i, [0, 0.7]) for i in imgs]), atol=1e-10)
    np.testing.assert_allclose(transform(x, -1.3, "shift_y", "spline")[:, 0].numpy(),
                               np.stack([ndimage.shift(i, [-1.3, 0]) for i in imgs]), atol=1e-10)


def test_spline_and_bilinear_agree_to_interpolation_error():
    "On a smooth blob both approach the analytically rotated blob; spline much closer; they differ by the bilinear error."
    n, c = 28, 13.5
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    blob = lambda ox, oy: torch.exp(-((xx - c - ox)**2 + (yy - c - oy)**2)/(2*3.**2))[None, None]
    th, (ox, oy) = 0.4, (2.5, -3.)
    exact = blob(math.cos(th)*ox + math.sin(th)*oy, -math.sin(th)*ox + math.cos(th)*oy)   # counter-clockwise, y down
    bil, spl = transform(blob(ox, oy), th), transform(blob(ox, oy), th, interpolation="spline")
    e_bil, e_spl = rel(bil, exact), rel(spl, exact)
    assert e_bil < 0.02 and e_spl < e_bil/5
    assert abs(rel(spl, bil) - e_bil) < e_bil/5


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_lie_derivative_is_the_finite_difference_limit(kind):
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    assert rel(lie_derivative(x, kind), fd_derivative(x, kind, eps=1e-5, scheme="richardson")) < 1e-7
    J = operator_generator(kind)
    assert rel((x.flatten(1) @ J.T).reshape(x.shape), lie_derivative(x, kind)) < 1e-12


def test_lie_derivative_analytic_on_smooth_image():
    "Rotation of a Gaussian blob: central Lie derivative -> ∇I·w at second order under grid refinement."
    errs = []
    for n in (56, 112):
        f = n/28; sg = 2*f; c = (n - 1)/2; mx, my = c + 2.5*f, c - 3*f
        yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
        I = torch.exp(-((xx - mx)**2 + (yy - my)**2)/(2*sg**2))
        wx, wy = velocity_field("rotation", n, n, dtype=torch.float64)
        dI = (-(xx - mx)*wx - (yy - my)*wy)/sg**2*I
        errs.append(rel(lie_derivative(I[None, None], side="central")[0, 0], dI))
    assert abs(math.log2(errs[0]/errs[1]) - 2) < 0.3 and errs[1] < 0.01


def test_orbit_and_generic_affine_warp():
    x = torch.rand(2, 1, 20, 24)
    ts = [0., 0.3, -0.5]
    for kind in TRANSFORMS:
        O = orbit(x, ts, kind)
        assert O.shape == (2, 3, 1, 20, 24)
        for a, t in enumerate(ts): assert (O[:, a] - transform(x, t, kind)).abs().max() < 1e-6
        tt = torch.tensor([0.2, -0.4])
        assert (transform_affine(x, *source_map(kind, tt, torch.float32)) - transform(x, tt, kind)).abs().max() < 1e-5
    assert orbit(x, ts, "rotation", "spline").shape == (2, 3, 1, 20, 24)


def test_bad_input():
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="kind must be one of"): transform(x, 0.1, "x_shift")
    with pytest.raises(TypeError, match="kind must be a str"): transform(x, 0.1, 0)
    with pytest.raises(ValueError, match="interpolation must be one of"): transform(x, 0.1, interpolation="cubic")
    with pytest.raises(ValueError, match=r"must have shape \(B, C, H, W\)"): transform(x[0], 0.1)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"): transform(x.tolist(), 0.1)
    with pytest.raises(ValueError, match="t must be finite"): transform(x, math.inf)
    with pytest.raises(ValueError, match=r"one per image \(2\)"): transform(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"images must have shape \(N,1,28,28\), \(N,28,28\) or \(N,784\)"):
        check_images(torch.zeros(2, 27, 28), "images", (1, 28, 28))
    assert check_images(np.zeros((2, 784)), size=(1, 28, 28)).shape == (2, 1, 28, 28)


def test_aff2_structure_constants_sign_from_the_matrices():
    "c_ab^k of the operators is minus the bracket constants of the 3x3 homogeneous generators; [shift_x, rotation] = +shift_y."
    c = aff2_structure_constants()
    i = {k: n for n, k in enumerate(AFF2_BASIS)}
    assert c[i["shift_x"], i["rotation"], i["shift_y"]] == 1.0
    G = {k: homogeneous_generator(k) for k in AFF2_BASIS}
    for a in AFF2_BASIS:
        for b in AFF2_BASIS:
            br = G[a] @ G[b] - G[b] @ G[a]
            assert np.abs(br + sum(c[i[a], i[b], i[k]]*G[k] for k in AFF2_BASIS)).max() < 1e-12


def test_operator_brackets_on_smooth_images():
    "Central operator generators: [J_x, J_rot] x ≈ J_y x to ~5 % on a 3-px blob, second order in 1/width."
    n = 40
    J = {k: operator_generator(k, "central", n, n) for k in ("shift_x", "shift_y", "rotation")}
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    errs = []
    for s in (2., 4.):
        x = torch.exp(-((xx - 21)**2 + (yy - 17.5)**2)/(2*s**2)).reshape(1, -1)
        errs.append(rel((x @ J["rotation"].T) @ J["shift_x"].T - (x @ J["shift_x"].T) @ J["rotation"].T, x @ J["shift_y"].T))
    assert 0.07 < errs[0] < 0.14 and errs[1] < 0.035 and abs(math.log2(errs[0]/errs[1]) - 2) < 0.3


def test_lie_derivative_along_any_field():
    "A (2, H, W) field equals its callable; the upwind derivative is the t->0+ limit of a grid_sample warp along the field."
    x = torch.rand(2, 1, 12, 14, dtype=torch.float64)
    sw = lambda u, v: (torch.sin(v/3), 0.5*torch.cos(u/4) - 0.2)
    yy, xx = torch.meshgrid(torch.arange(12, dtype=torch.float64), torch.arange(14, dtype=torch.float64), indexing="ij")
    w = torch.stack(sw(xx - 6.5, yy - 5.5))
    d = lie_derivative(x, field=sw)
    assert (d - lie_derivative(x, field=w)).abs().max() == 0
    def warp(t):   # bilinear sample of x at p + t w(p), zero padding, align_corners=True
        gx, gy = (xx + t*w[0])/6.5 - 1, (yy + t*w[1])/5.5 - 1
        return torch.nn.functional.grid_sample(x, torch.stack([gx, gy], -1)[None].expand(2, -1, -1, -1), align_corners=True)
    h = 1e-6
    assert rel((warp(h) - warp(0.))/h, d) < 1e-5
    assert rel((x.flatten(1) @ operator_generator(H=12, W=14, field=sw).T).reshape(x.shape), d) < 1e-12
    with pytest.raises(ValueError, match="field must give"): lie_derivative(x, field=w[:, :5])
    with pytest.raises(TypeError, match="field must be a callable"): lie_derivative(x, field=[1, 2])
