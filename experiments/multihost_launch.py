"""Run meanfield_jax on several processes (hosts) at once: particles and a 2-D grid sharded over all devices.

Every process runs this same script (SPMD). After ``jax.distributed.initialize`` the devices of all
processes form one mesh; each process draws its own share of the particles, and the global arrays are
assembled from the shares without copying data between hosts. The script then

1. pushes the particles through a ResNet (``resnet_forward``; the rows stay on their devices),
2. fits W, b to a linear target by a few gradient steps (``fit``; the loss is one all-reduce),
3. solves the 2-D continuity equation with the grid split along x over all devices
   (``sharded_vlasov_2d``, halo exchange between neighbouring devices, also across hosts),

and process 0 prints a JSON summary. Typical launches:

    # one process per host (or per GPU), e.g. from a batch script; process_id = the rank
    python experiments/multihost_launch.py --coordinator host0:12345 --num-processes 4 --process-id $RANK

    # SLURM, Open MPI, Kubernetes/GKE and Cloud TPU: JAX finds coordinator, count and rank itself
    srun python experiments/multihost_launch.py --auto

    # try it on one machine: 2 processes with 4 CPU devices each, talking over localhost
    python experiments/multihost_launch.py --simulate 2 --devices-per-process 4
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", help="host:port of process 0 (e.g. host0:12345)")
    parser.add_argument("--num-processes", type=int, help="number of processes in the run")
    parser.add_argument("--process-id", type=int, help="rank of this process, 0 … num_processes − 1")
    parser.add_argument("--auto", action="store_true", help="let JAX detect the cluster (SLURM, MPI, TPU, …)")
    parser.add_argument("--simulate", type=int, metavar="P", help="spawn P local processes on CPU devices")
    parser.add_argument("--devices-per-process", type=int, default=4, help="CPU devices each (--simulate)")
    parser.add_argument("--particles", type=int, default=4096, help="particles per process")
    parser.add_argument("--cells", type=int, default=64, help="grid cells per device along x (and ny)")
    parser.add_argument("--steps", type=int, default=20, help="gradient steps of the fit")
    args = parser.parse_args(argv)
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if args.simulate is None and not args.auto and None in explicit:
        parser.error("give --coordinator, --num-processes and --process-id, or --auto, or --simulate P")
    if args.simulate is not None and args.simulate < 1:
        parser.error(f"--simulate must be >= 1, got {args.simulate}")
    return args


def simulate(args: argparse.Namespace) -> int:
    """Start ``args.simulate`` copies of this script on this machine, each with its own CPU devices."""
    with socket.socket() as probe:  # a free port for the coordinator
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    count = f"--xla_force_host_platform_device_count={args.devices_per_process}"
    flags = f"{os.environ.get('XLA_FLAGS', '')} {count}".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    common = ["--coordinator", f"localhost:{port}", "--num-processes", str(args.simulate),
              "--particles", str(args.particles), "--cells", str(args.cells), "--steps", str(args.steps)]
    children = [
        subprocess.Popen([sys.executable, __file__, *common, "--process-id", str(rank)], env=env)
        for rank in range(args.simulate)
    ]
    return max(child.wait() for child in children)


def run(args: argparse.Namespace) -> dict:
    import jax

    if args.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.experimental import multihost_utils

    import meanfield_jax as mfj
    from meanfield_jax.sharding import particle_mesh, particles_from_local, sharded_vlasov_2d

    def to_host(a):
        """The value of a global array on every process (it may span devices of other processes)."""
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    mesh = particle_mesh()  # every device of every process, in a fixed global order
    rank = jax.process_index()

    # 1. particles: each process draws its own rows; the global array is the concatenation
    rng = np.random.default_rng(1000 + rank)
    local = rng.normal(size=(args.particles, 2))
    x = particles_from_local(local, mesh)
    y = particles_from_local(0.5 * local + 0.2, mesh)
    field = mfj.NeuralField.constant(
        jnp.array([[0.2, -0.3], [0.3, 0.2]]), jnp.zeros(2), num_layers=8, T=1.0, activation="tanh"
    )
    xT = mfj.resnet_forward(field, x)

    # 2. fit: the data are arguments of the loss (a Partial), so they stay sharded inside the compiled step
    def squared_error(data, target, params):
        return jnp.mean(jnp.sum((mfj.resnet_forward(params, data) - target) ** 2, axis=-1))

    fitted = mfj.fit(field, jax.tree_util.Partial(squared_error, x, y), optax.adam(5e-2), args.steps,
                     progress=False)

    # 3. the 2-D continuity equation, x rows split over all devices of all processes
    n = args.cells * jax.device_count()
    grid = mfj.Grid2D((-3.0, 3.0, n), (-3.0, 3.0, args.cells))
    f0 = grid.project(lambda a, b: jnp.exp(-2.0 * ((a - 0.5) ** 2 + b**2)))
    sol = sharded_vlasov_2d(fitted.params, f0, grid, mesh, boundary="outflow")
    mass = sol.total_mass()

    return {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "particles": int(x.shape[0]),
        "particle_rows_on_this_process": sum(s.data.shape[0] for s in xT.addressable_shards),
        "output_mean": to_host(jnp.mean(xT, axis=0)).tolist(),
        "loss_first_last": [float(fitted.history[0]), float(fitted.history[-1])],
        "grid": list(grid.shape),
        "steps": int(sol.num_steps),
        "mass_plus_outflow": to_host(mass).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.simulate is not None:
        return simulate(args)
    summary = run(args)
    import jax

    if jax.process_index() == 0:  # one report (and, in real runs, one writer of files)
        print(json.dumps(summary, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
