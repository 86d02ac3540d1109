"""The written-out Threefry-2x32 draw: the published test vectors, and JAX's normal samples bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield_jax import threefry


@pytest.mark.parametrize(
    "key, counter, expected",
    [  # Salmon et al.'s known-answer vectors for Threefry-2x32 with 20 rounds (Random123's kat_vectors)
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_hash_matches_the_published_vectors(key, counter, expected):
    words = [jnp.asarray(np.uint32(w)) for w in (*key, *counter)]
    y = jax.jit(threefry.threefry2x32)(*words)
    assert [int(v) for v in y] == list(expected)


def _keys():
    return [jax.random.fold_in(jax.random.PRNGKey(1), 5), jax.random.fold_in(jax.random.key(3), 77)]


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("shape", [(100_000,), (25_001, 4), (7, 3), (2, 3, 5), ()])
def test_normal_is_jax_random_normal_bit_for_bit(x64, shape):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        for key in _keys():
            assert threefry._fused(key, shape, jnp.dtype(dtype), None)  # the written-out path is tested
            ours = jax.jit(threefry.normal, static_argnums=(1, 2))(key, shape, dtype)
            theirs = jax.random.normal(key, shape, dtype)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_default_dtype_int_shape_and_vmap_over_keys():
    key = jax.random.PRNGKey(4)
    for x64 in (False, True):
        with jax.enable_x64(x64):
            ours, theirs = threefry.normal(key, 1000), jax.random.normal(key, 1000)
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    for keys in (jax.random.split(key, 3), jax.random.split(jax.random.key(4), 3)):
        ours = jax.vmap(lambda k: threefry.normal(k, (50, 2)))(keys)
        theirs = jax.vmap(lambda k: jax.random.normal(k, (50, 2)))(keys)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_a_batch_of_keys_gets_jax_error():
    for keys in (jax.random.split(jax.random.PRNGKey(0), 3), jax.random.split(jax.random.key(0), 3)):
        assert not threefry._fused(keys, (4, 2), jnp.dtype(jnp.float32), None)
        with pytest.raises((TypeError, ValueError)):
            threefry.normal(keys, (4, 2))


def test_other_keys_and_explicit_shardings_go_to_jax():
    rbg = jax.random.key(0, impl="rbg")  # its values may change between compilations: not compared
    assert not threefry._fused(rbg, (10,), jnp.dtype(jnp.float32), None)
    assert threefry.normal(rbg, (10, 2)).shape == (10, 2)
    key = jax.random.PRNGKey(0)
    assert not threefry._fused(key, (10,), jnp.dtype(jnp.float32), object())
    assert not threefry._fused(key, (10,), jnp.dtype(jnp.bfloat16), None)
    with jax.threefry_partitionable(False):
        assert not threefry._fused(key, (10,), jnp.dtype(jnp.float32), None)
        np.testing.assert_array_equal(threefry.normal(key, (10,)), jax.random.normal(key, (10,)))
