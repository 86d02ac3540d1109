"""Kinetic solves shared by the tests of their adjoints: fields with layer boundaries and a save time inside
the loop (so that steps are cut short), and Δt that depends on the field; the loss weighs both saved
densities (so the save inside the loop gets a cotangent too); a count of primitives in a jaxpr, for the
tests that a kinetic kernel takes the path it should; and the comparison of two layouts of one solve
through every adjoint."""

import equinox as eqx
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

import meanfield_jax as mfj
from meanfield_jax.adjoint import KINETIC_ADJOINTS

GRID_1D = mfj.Grid1D(-4.0, 4.0, 48)
GRID_2D = mfj.Grid2D((-3.0, 3.0, 16), (-2.5, 2.5, 12))
W_1D = jnp.array([[[1.2]], [[-0.7]], [[0.4]]])
B_1D = jnp.array([[0.3], [-0.2], [0.1]])
W_2D = jnp.array([[[1.0, -1.5], [1.2, 0.4]], [[-0.6, 0.8], [-1.0, 0.3]]])
B_2D = jnp.array([[0.1, -0.2], [0.3, 0.2]])
SAVES = [0.0, 0.45, 1.0]


def primitive_equations(jaxpr, name: str) -> list:
    """The equations of primitive ``name`` in a jaxpr, those in its sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += primitive_equations(sub, name)
    return found


def count_primitives(jaxpr, name: str) -> int:
    """The number of :func:`primitive_equations` of ``name`` in a jaxpr."""
    return len(primitive_equations(jaxpr, name))


class ReorderedField(mfj.AbstractField):
    """A NeuralField whose layers run in the order given by an integer array (a traced integer leaf)."""

    inner: mfj.NeuralField
    order: Array
    T: float = eqx.field(static=True)
    feedback: float | None = eqx.field(static=True)

    @property
    def d(self):
        return self.inner.d

    @property
    def num_layers(self):
        return self.inner.num_layers

    def layer_velocity(self, l, x, mean=None):
        return self.inner.layer_velocity(self.order[l], x, mean)


# name: (grid, solver, keyword arguments, field feedback, wrap the field in ReorderedField)
CASES = {
    "vlasov_muscl_1d": (GRID_1D, mfj.solve_vlasov, {"max_steps": 60}, None, False),
    "vlasov_muscl_minmod_ssprk3_periodic_1d": (GRID_1D, mfj.solve_vlasov, {
        "limiter": "minmod", "time_stepper": "ssprk3", "boundary": "periodic", "max_steps": 60}, None, False),
    "vlasov_muscl_vanleer_euler_zero_flux_1d": (GRID_1D, mfj.solve_vlasov, {
        "limiter": "vanleer", "time_stepper": "euler", "boundary": "zero_flux", "max_steps": 90},
        None, False),
    "vlasov_muscl_zero_flux_2d": (GRID_2D, mfj.solve_vlasov, {"boundary": "zero_flux", "max_steps": 40}, None,
                                  False),
    "vlasov_cweno3_ssprk3_periodic_2d": (GRID_2D, mfj.solve_vlasov, {
        "scheme": "cweno3", "time_stepper": "ssprk3", "boundary": "periodic", "max_steps": 40}, None, False),
    "vlasov_cweno3_periodic_1d": (GRID_1D, mfj.solve_vlasov, {
        "scheme": "cweno3", "boundary": "periodic", "max_steps": 60}, None, False),
    "vlasov_upwind_euler_zero_flux_1d": (GRID_1D, mfj.solve_vlasov, {
        "scheme": "upwind", "time_stepper": "euler", "boundary": "zero_flux", "max_steps": 60}, None, False),
    "vlasov_feedback_1d": (GRID_1D, mfj.solve_vlasov, {"boundary": "zero_flux", "max_steps": 60}, -0.5,
                           False),
    "vlasov_integer_leaf_1d": (GRID_1D, mfj.solve_vlasov, {"max_steps": 60}, -0.5, True),
    "fokker_planck_explicit_1d": (GRID_1D, mfj.solve_fokker_planck, {"diffusion": 0.4, "max_steps": 300},
                                  None, False),
    "fokker_planck_explicit_2d": (GRID_2D, mfj.solve_fokker_planck, {"diffusion": 0.3, "max_steps": 100},
                                  None, False),
    "fokker_planck_implicit_2d": (GRID_2D, mfj.solve_fokker_planck, {
        "diffusion": 0.3, "method": "implicit", "max_steps": 30}, None, False),
}


def initial(grid):
    if grid.d == 1:
        return grid.project(lambda x: jnp.exp(-2.0 * (x - 0.5) ** 2))
    return grid.project(lambda x, y: jnp.exp(-2.0 * ((x - 0.6) ** 2 + (y + 0.3) ** 2)))


def parameters(case):
    return (W_1D, B_1D) if CASES[case][0].d == 1 else (W_2D, B_2D)


def loss(case, W, b, f0, adjoint):
    """A weighted sum of both saved densities (so the save inside the loop gets a cotangent too)."""
    grid, solver, kwargs, feedback, reordered = CASES[case]
    field = mfj.NeuralField(W, b, activation="tanh", T=1.0, feedback=feedback)
    if reordered:
        order = jnp.array([2, 0, 1], jnp.int32)
        field = ReorderedField(inner=field, order=order, T=field.T, feedback=feedback)
    f = solver(field, f0, grid, save_at=SAVES, adjoint=adjoint, **kwargs).f
    x = grid.x if grid.d == 1 else grid.xaxis.x[:, None] + 0.5 * grid.yaxis.x[None, :] ** 2
    return jnp.sum(f[1] * x) + 2.0 * jnp.sum(f[2] * x**2)


def assert_gradients_agree(got, want):
    """Each gradient equals its reference to round-off (10⁻¹¹ of its largest entry), and each reference
    is non-zero (every argument moves the loss)."""
    for a, b in zip(got, want):
        scale = float(jnp.max(jnp.abs(b)))
        assert scale > 1e-4
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11 * scale)


# every kinetic adjoint but "direct", which differentiates the same steps as "checkpointed", only unsegmented
COMPARED_ADJOINTS = tuple(adjoint for adjoint in KINETIC_ADJOINTS if adjoint != "direct")


def solves_by_adjoint(loss, W, b) -> dict:
    """``((value, density), (∂/∂W, ∂/∂b))`` of ``loss(W, b, adjoint) -> (value, density)`` per adjoint."""
    return {adjoint: jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(W, b, adjoint)
            for adjoint in COMPARED_ADJOINTS}


def assert_same_solves(got: dict, want: dict) -> None:
    """Two :func:`solves_by_adjoint` of one solve in two layouts: the densities bit for bit, the gradients
    to round-off, each reference gradient non-zero."""
    for adjoint in want:
        (_, f_a), grad_a = got[adjoint]
        (_, f_b), grad_b = want[adjoint]
        np.testing.assert_array_equal(f_a, f_b)
        for a, g in zip(grad_a, grad_b):
            assert float(jnp.max(jnp.abs(g))) > 1e-3
            np.testing.assert_allclose(a, g, rtol=1e-13, atol=1e-15, err_msg=adjoint)
