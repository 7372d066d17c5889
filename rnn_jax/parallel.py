"""Data parallelism with `jax.sharding`: the batch split along a one-axis device mesh, the
parameters and optimizer state replicated; the compiler inserts the collectives (the
gradient of a batch-mean loss is all-reduced), so the jitted train step itself is unchanged.

Within a host the mesh spans the local devices (GPUs, TPU cores, or CPU devices forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``); across hosts `initialize` starts
`jax.distributed` and the mesh spans every process's devices. Each process then puts only
its own rows of the global batch on its devices (`jax.make_array_from_process_local_data`).

On one device every method here is the identity: the single-device path costs nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize(coordinator: str, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join a multi-process run (`jax.distributed.initialize`) before any other JAX work.
    `coordinator` "auto": detect the cluster's environment (SLURM, Open MPI, TPU pods, ...);
    otherwise process 0's HOST:PORT, with the number of processes and this one's index."""
    if coordinator == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
    """Whether this process writes the run's files (results, plots, logs); checkpoints are
    written by all processes together (orbax)."""
    return jax.process_index() == 0


@dataclasses.dataclass
class DeviceOptions:
    """Where a run executes, not what it trains: a resumed run takes these flags from its
    command line (`DEVICE_FLAGS`), not from its saved config."""

    devices: int | None = None
    """data-parallel over this many devices (None: all visible; the batch is split over them, so it
    must divide evenly)"""
    coordinator: str | None = None
    """multi-process run: process 0's HOST:PORT (with --num-processes and --process-id), or auto to detect
    the cluster (SLURM, MPI, TPU pods)"""
    num_processes: int | None = None
    """multi-process run: how many processes"""
    process_id: int | None = None
    """multi-process run: this process's index, 0 to N-1"""

    def __post_init__(self):
        if self.devices is not None and self.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {self.devices}")
        if self.coordinator not in (None, "auto"):
            if self.num_processes is None or self.process_id is None:
                raise ValueError(
                    "--coordinator HOST:PORT needs --num-processes N and --process-id I "
                    "(or --coordinator auto on a cluster)"
                )
            if not 0 <= self.process_id < self.num_processes:
                raise ValueError(f"--process-id must be in 0..{self.num_processes - 1}, got {self.process_id}")
        elif self.num_processes is not None or self.process_id is not None:
            raise ValueError("--num-processes and --process-id go with --coordinator HOST:PORT")

    def start_processes(self, out: str | None) -> None:
        """Join the multi-process run if one is configured; every process must write to the
        same `out` (the checkpoints are written there together)."""
        if self.coordinator is None:
            return
        if out is None:
            raise ValueError("a multi-process run needs --out: the same directory in every process")
        initialize(self.coordinator, self.num_processes, self.process_id)


DEVICE_FLAGS = tuple(field.name for field in dataclasses.fields(DeviceOptions))


class DataParallel:
    """Places the train state (replicated; a stateful carry split by batch row) and the
    batches (split along their batch axis: `batch_axis` 0, or 1 behind a leading seed axis of
    stacked seeds) on a mesh of `devices` devices (default: all of them)."""

    def __init__(self, devices: int | None = None, *, batch_axis: int = 0):
        available = jax.devices()
        count = len(available) if devices is None else devices
        if not 1 <= count <= len(available):
            raise ValueError(
                f"--devices {count}: this run sees {len(available)} {available[0].platform} device(s); "
                f"choose 1 to {len(available)}"
            )
        if jax.process_count() > 1 and count != len(available):
            raise ValueError("a multi-process run uses every device of every process; leave --devices out")
        self.mesh = Mesh(np.array(available[:count]), (DATA_AXIS,))
        self.batch_axis = batch_axis
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, PartitionSpec(*[None] * batch_axis, DATA_AXIS))

    @property
    def size(self) -> int:
        return self.mesh.size

    def check_batch(self, batch_size: int, flag: str = "--batch") -> None:
        if batch_size % self.size:
            raise ValueError(
                f"{flag} {batch_size} does not split evenly over {self.size} devices; use a multiple of "
                f"{self.size} or fewer --devices"
            )

    def place_state(self, state):
        """The TrainState replicated on every device, its stateful carry split by batch row."""
        if self.size == 1:
            return state
        carry = jax.device_put(state.carry, self.split)
        return jax.device_put(state.replace(carry=None), self.replicated).replace(carry=carry)

    def replicate(self, tree):
        """Arrays that every device reads whole (e.g. evaluation batches)."""
        return tree if self.size == 1 else jax.device_put(tree, self.replicated)

    def place_batch(self, batch):
        """A global batch split along its batch axis (arrays without one, such as a stream
        reset flag, replicated). In a multi-process run every process computes the same global
        batch and transfers only its own rows."""
        if self.size == 1:
            return batch
        return jax.tree.map(self._place, batch)

    def _place(self, array):
        if np.ndim(array) <= self.batch_axis:
            return jax.device_put(array, self.replicated)
        size = np.shape(array)[self.batch_axis]
        self.check_batch(size, "the batch size")
        if jax.process_count() == 1:
            return jax.device_put(array, self.split)
        rows = size // jax.process_count()
        # this process's rows, sliced where the batch is (a device-made batch stays on the device: no
        # host round trip per step)
        local = jax.lax.slice_in_dim(
            array, jax.process_index() * rows, (jax.process_index() + 1) * rows, axis=self.batch_axis
        )
        return jax.make_array_from_process_local_data(self.split, local, np.shape(array))
