"""jit_arrays: jax.jit for array-only arguments, eqx.filter_jit otherwise, the same numbers either way."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from meanfield_jax import dispatch
from meanfield_jax.dispatch import compiler_options, filter_jit, jit, jit_arrays


class Scaled(eqx.Module):
    scale: float | jax.Array
    fn: Callable = eqx.field(static=True)


class Unmarked(eqx.Module):
    fn: Callable  # a function as a pytree leaf: jax.jit cannot take it, eqx.filter_jit treats it as static


def test_array_arguments_take_jax_jit_and_other_leaves_fall_back():
    traces = []

    def apply(model, x, power):
        traces.append(type(model).__name__)
        scale = model.scale if isinstance(model, Scaled) else 2.0
        return model.fn(scale * x) ** power

    compiled = jit_arrays(apply, static_argnames=("power",))
    x = jnp.linspace(0.0, 1.0, 5)
    with_array = compiled(Scaled(jnp.asarray(2.0), jnp.sin), x, 2)
    with_array_again = compiled(Scaled(jnp.asarray(3.0), jnp.sin), x, 2)  # new value, same trace
    with_function_leaf = compiled(Unmarked(jnp.sin), x, 2)
    np.testing.assert_allclose(with_array, np.sin(2 * np.asarray(x)) ** 2, rtol=1e-6)
    np.testing.assert_allclose(with_array_again, np.sin(3 * np.asarray(x)) ** 2, rtol=1e-6)
    np.testing.assert_allclose(with_function_leaf, with_array, rtol=1e-6)
    assert traces == ["Scaled", "Unmarked"]


def test_python_number_leaves_fall_back_to_filter_jit_and_stay_static():
    compiled = jit_arrays(lambda model, x: model.scale * x, static_argnames=())
    assert float(compiled(Scaled(3.0, jnp.sin), jnp.asarray(2.0))) == 6.0
    assert float(compiled(Scaled(4.0, jnp.sin), jnp.asarray(2.0))) == 8.0


def test_tracers_take_the_fast_path_under_an_outer_transformation():
    compiled = jit_arrays(lambda model, x: jnp.sum(model.fn(model.scale * x)), static_argnames=())
    grad = jax.grad(lambda s: compiled(Scaled(s, jnp.sin), jnp.ones(3)))(jnp.asarray(0.5))
    np.testing.assert_allclose(grad, 3 * np.cos(0.5), rtol=1e-12)


def test_preferred_options_unless_xla_flags_set_them():
    width, region = "xla_cpu_prefer_vector_width", "xla_cpu_copy_insertion_use_region_analysis"
    assert compiler_options("") == {width: 512, region: True}
    assert compiler_options("--xla_force_host_platform_device_count=8") == {width: 512, region: True}
    assert compiler_options(f"--{width}=256 --xla_cpu_enable_fast_math=false") == {region: True}
    assert compiler_options(f"--{region}=false --{width}=512") == {}


def test_compiled_with_the_options_gives_the_same_values_to_round_off():
    """An elementwise kernel (an even count: vectorised and split over threads) and a reduction, compiled
    with the package's options and by plain jax.jit."""
    x = jnp.linspace(-3.0, 3.0, 100_000)
    W = jnp.asarray([[0.7, -1.1], [0.4, 0.9]])

    def kernel(x):
        y = jnp.stack([x, x**2], axis=-1)
        return jnp.tanh(y @ W.T + 0.1), jnp.sum(jnp.exp(-(x**2)))

    ours, plain = jit(kernel)(x), jax.jit(kernel)(x)
    np.testing.assert_allclose(ours[0], plain[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours[1], plain[1], rtol=1e-6)


def test_options_only_outside_transformations():
    seen = []

    def record(x):
        seen.append(dispatch._at_top_level())
        return x

    record(1.0)
    jax.jit(record)(1.0)
    jax.grad(record)(1.0)
    jax.vmap(record)(jnp.ones(2))
    assert seen == [True, False, False, False]


def test_package_jits_work_under_transformations():
    """JAX refuses compiler options for a jit staged into another program or under jax.grad; the package's
    jit and filter_jit pass them only at the top level, so every transformation works."""
    f = jit(lambda x: jnp.sin(x) * x)
    g = filter_jit(lambda x, scale: scale * jnp.sin(x) * x)
    x = jnp.linspace(0.0, 1.0, 4)
    expected = np.sin(np.asarray(x)) * np.asarray(x)
    derivative = np.cos(np.asarray(x)) * np.asarray(x) + np.sin(np.asarray(x))
    for h in (f, lambda x: g(x, 1.0)):
        np.testing.assert_allclose(h(x), expected, rtol=1e-6)
        np.testing.assert_allclose(jax.jit(h)(x), expected, rtol=1e-6)
        np.testing.assert_allclose(jax.vmap(h)(x), expected, rtol=1e-6)
        scanned = jax.lax.scan(lambda c, xi, h=h: (c, h(xi)), 0.0, x)[1]
        np.testing.assert_allclose(scanned, expected, rtol=1e-6)
        np.testing.assert_allclose(jax.vmap(jax.grad(h))(x), derivative, rtol=1e-6)
        np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(h)))(x), derivative, rtol=1e-6)
