"""Fig. 8 through the API: fit (w, b) of an identity ResNet to a new target line y = 0.5 x + 1.

Run: python experiments/novel_target.py
"""

import jax
import jax.numpy as jnp

import meanfield_jax as mfj

jax.config.update("jax_enable_x64", True)

key_x, key_e = jax.random.split(jax.random.PRNGKey(0))
x = jax.random.uniform(key_x, (2000, 1))
y = 0.5 * x + 1.0 + 0.1 * jax.random.normal(key_e, x.shape)
L, T = 20, 1.0


def loss(p):
    field = mfj.NeuralField.constant(p["w"], p["b"], num_layers=L, T=T)
    return jnp.mean((mfj.resnet_forward(field, x) - y) ** 2)


result = mfj.fit({"w": jnp.array(1.0), "b": jnp.array(-1.0)}, loss, optimizer="lbfgs", steps=100)
w, b = mfj.closed_forms.line_map_parameters_discrete(0.5, 1.0, T, L)
print(f"fitted w = {float(result.params['w']):.4f}, b = {float(result.params['b']):.4f}")
print(f"closed form (noise-free, {L} Euler layers): w = {float(w):.4f}, b = {float(b):.4f}")
print(f"final loss {result.history[-1]:.4f} (noise variance 0.01)")
