"""Training replaced by fitting distributions: (w, b) so that the Fokker–Planck steady state is N(1, 0.5²).

Gradient descent through the direct steady-state solve recovers w = -K/s², b = K μ/s².
Run: python experiments/fokker_planck_fit.py
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

import meanfield_jax as mfj

jax.config.update("jax_enable_x64", True)

K, mu, s = 1.0, 1.0, 0.5
grid = mfj.Grid1D(-4.0, 6.0, 200)
target = jnp.diff(ndtr((grid.faces - mu) / s)) / grid.dx


def loss(p):
    field = mfj.NeuralField.constant(p["w"], p["b"], num_layers=1)
    return mfj.losses.l2(mfj.fokker_planck_steady_state(field, grid, diffusion=K), target, grid, squared=True)


result = mfj.fit({"w": jnp.array(-1.0), "b": jnp.array(0.0)}, loss, optimizer="lbfgs", steps=50)
w, b = (mfj.closed_forms.gaussian_steady_state_parameters(mu, s**2, K))
print(f"fitted w = {float(result.params['w']):.4f}, b = {float(result.params['b']):.4f}")
print(f"closed form w = {float(w):.4f}, b = {float(b):.4f}; final loss {result.history[-1]:.2e}")
