"""Training replaced by fitting distributions (MODEL.md §6.4): gradient descent through the steady state."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import ndtr

import meanfield_jax as mfj

GRID = mfj.Grid1D(-5.0, 5.0, 200)


def gaussian_cells(mean, std):
    return jnp.diff(ndtr((GRID.faces - mean) / std)) / GRID.dx


def steady_state(p, diffusion=1.0):
    field = mfj.NeuralField.constant(p["w"], p["b"], num_layers=1)
    return mfj.fokker_planck_steady_state(field, GRID, diffusion=diffusion)


def test_fit_recovers_gaussian_matching_parameters():
    """Target N(μ, s²) with K = 1: the optimum is w = −K/s², b = K μ/s² (to 3 %)."""
    mu, s, K = 0.8, 0.6, 1.0
    target = gaussian_cells(mu, s)

    def loss(p):
        return mfj.losses.l2(steady_state(p, K), target, GRID, squared=True)

    result = mfj.fit({"w": jnp.array(-1.0), "b": jnp.array(0.0)}, loss, optimizer="lbfgs", steps=60,
                     progress=False)
    w, b = float(result.params["w"]), float(result.params["b"])
    w_star, b_star = -K / s**2, K * mu / s**2
    assert abs(w / w_star - 1) < 0.03 and abs(b / b_star - 1) < 0.03
    assert result.history[-1] < 1e-3 * result.history[0]


class BumpDiffusion(eqx.Module):
    """K(x) = exp(c0 + c1 exp(−x²/2)): a diffusion that can be larger near 0 than in the tails."""

    c: jax.Array

    def __call__(self, x):
        return jnp.exp(self.c[0] + self.c[1] * jnp.exp(-0.5 * x**2))


def test_space_dependent_diffusion_fits_a_bimodal_target_better_than_any_gaussian():
    """Bimodal target: the best Gaussian steady state (identity σ, constant K) against a space-dependent K."""
    target = 0.5 * gaussian_cells(-1.5, 0.5) + 0.5 * gaussian_cells(1.5, 0.5)

    def gaussian_loss(p):
        return mfj.losses.l2(steady_state(p), target, GRID, squared=True)

    best_gauss = mfj.fit({"w": jnp.array(-1.0), "b": jnp.array(0.0)}, gaussian_loss, optimizer="lbfgs",
                         steps=80, progress=False)

    def bump_loss(p):
        return mfj.losses.l2(steady_state(p, BumpDiffusion(p["c"])), target, GRID, squared=True)

    init = {"w": jnp.array(-1.0), "b": jnp.array(0.0), "c": jnp.array([0.0, 0.0])}
    bump = mfj.fit(init, bump_loss, optimizer=optax.adam(0.05), steps=400, progress=False)
    loss_gauss, loss_bump = float(best_gauss.history[-1]), float(bump_loss(bump.params))
    print(f"best Gaussian L2² = {loss_gauss:.4g}, space-dependent K L2² = {loss_bump:.4g}")
    # the fitted Gaussian is at least as good, in this loss, as the moment-matched N(0, 2.5)
    moment_matched = float(mfj.losses.l2(gaussian_cells(0.0, np.sqrt(2.5)), target, GRID, squared=True))
    assert loss_gauss <= moment_matched
    assert loss_bump < 0.25 * loss_gauss
    f = steady_state(bump.params, BumpDiffusion(bump.params["c"]))
    centre, mode = float(f[GRID.n // 2]), float(jnp.max(f))
    assert centre < 0.5 * mode  # the fitted steady state is bimodal


def test_steady_state_gradient_matches_finite_differences():
    K = BumpDiffusion(jnp.array([0.1, 0.4]))

    def moment(p):
        f = steady_state(p, K)
        return GRID.integrate(f * GRID.x**2) + 0.3 * GRID.integrate(f * GRID.x)

    p = {"w": jnp.array(-1.3), "b": jnp.array(0.4)}
    g = jax.grad(moment)(p)
    for name in p:
        h = 1e-6
        up = dict(p, **{name: p[name] + h})
        dn = dict(p, **{name: p[name] - h})
        fd = (moment(up) - moment(dn)) / (2 * h)
        np.testing.assert_allclose(g[name], fd, rtol=1e-6)
