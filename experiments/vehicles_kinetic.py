"""Fig. 4 through the API: the kinetic classifier next to 10^5 ResNet particles.

Run: python experiments/vehicles_kinetic.py
"""

import jax
import jax.numpy as jnp

import meanfield_jax as mfj

jax.config.update("jax_enable_x64", True)

field = mfj.NeuralField.constant(1.0, -5.0, num_layers=40, T=2.0, activation="tanh")
print("rest point:", mfj.steady_state(field).x, mfj.steady_state(field).kind)      # [5.] repelling

grid = mfj.Grid1D(-2.0, 12.0, 560)                                                 # a face at x = 5
f0 = grid.project(lambda x: jnp.where((x > 2.0) & (x < 8.0), 1.0 / 6.0, 0.0))
sol = mfj.solve_vlasov(field, f0, grid, save_at=[0.0, 1.0, 2.0], scheme="muscl", limiter="mc")
left = sol.f[:, : 280].sum(axis=1) * grid.dx + sol.outflow[:, 0]
print("mass left of 5 at t = 0, 1, 2:", left)                                      # 1/2 each
print("total mass (inside + outflow):", sol.total_mass())

x0 = jax.random.uniform(jax.random.PRNGKey(0), (100_000, 1), minval=2.0, maxval=8.0)
xT = mfj.resnet_forward(field, x0)
print("particles left of 5:", float(jnp.mean(xT < 5.0)), "(the same fraction as at t = 0:",
      float(jnp.mean(x0 < 5.0)), ")")
