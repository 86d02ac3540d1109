"""Fig. 1 through the API: ResNet moments against the exact moment ODE, with and without feedback bias.

Run: python experiments/moments_fig1.py [OUTPUT.png]
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import meanfield_jax as mfj

jax.config.update("jax_enable_x64", True)

x0 = jax.random.uniform(jax.random.PRNGKey(0), (20_000, 1), minval=2.0, maxval=8.0)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, beta in zip(axes, [None, -1.0]):
    field = mfj.NeuralField.constant(-1.0, 0.0, num_layers=500, T=5.0, feedback=beta)
    traj = mfj.resnet_forward(field, x0, save_every=5)               # (101, n, 1)
    ts = jnp.linspace(0.0, 5.0, traj.shape[0])
    m = jax.vmap(lambda x: mfj.particle_moments(x[:, 0], 2))(traj)   # (101, 3)
    exact = mfj.moment_ode(-1.0, 0.0, m[0], ts, feedback=beta)
    print(f"feedback={beta}: max |m - exact| = {float(jnp.max(jnp.abs(m - exact))):.3e}")
    for k in range(3):
        ax.plot(ts, exact[:, k], label=f"m{k} exact")
        ax.plot(ts[::4], m[::4, k], "o", mfc="none", ms=3, label=f"m{k} ResNet")
    ax.set_title("b = 0" if beta is None else "b = -m1(t)/m0")
    ax.legend(fontsize=7)
out = Path(sys.argv[1] if len(sys.argv) > 1 else "fig1_moments_api.png")
if out.exists():
    sys.exit(f"{out} exists; pass another file name")
fig.savefig(out, dpi=120)
