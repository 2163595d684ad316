"""Multi-host runs: one ptune process per host, joined by JAX's multi-controller runtime.

Every host runs the same command; `initialize` connects them through
`jax.distributed.initialize`, after which `jax.devices()` lists the devices of all hosts and
the (data, model) mesh spans them (`ptune.partitioning`). Then, in `ptune.trainer`:
  - each host reads only its shard of the training data (seqio `ShardInfo(index, count)`) and
    feeds its rows of the global batch (`Partitioner.shard_batch`);
  - Orbax checkpoints are written by all hosts together (each writes the shards it owns);
  - prompt exports, metrics and TensorBoard events come from process 0 only;
  - seeds come from the same configuration on every host; `check_same_on_all_hosts` fails
    fast when they (or the configuration) differ.

Detection: with no explicit coordinator, JAX finds it on Cloud TPU pods (GCE/GKE metadata),
under SLURM (`srun`), Open MPI and Kubernetes indexed jobs.

The numerical core: jax only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import jax
import numpy as np

from ptune.errors import UserError

log = logging.getLogger("ptune")


@dataclasses.dataclass(frozen=True)
class ProcessConfig:
    """How this process joins the others. All None: detect them (TPU pod, SLURM, ...).

    coordinator_address: 'host:port' of process 0's coordinator service.
    num_processes: how many processes (hosts) take part.
    process_id: this process's index in [0, num_processes).
    local_device_ids: the local devices this process drives (e.g. one GPU per process).
    """

    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    local_device_ids: Optional[tuple[int, ...]] = None

    def check(self) -> None:
        explicit = (self.coordinator_address, self.num_processes, self.process_id)
        if any(v is not None for v in explicit) and any(v is None for v in explicit):
            raise UserError(
                "multi-process flags: give all of --coordinator_address, "
                "--num_processes and --process_id, or none of them (auto-detect "
                "on TPU pods and under SLURM)"
            )
        if self.num_processes is not None:
            if self.num_processes < 1:
                raise UserError(f"--num_processes must be at least 1, got {self.num_processes}")
            if not 0 <= self.process_id < self.num_processes:
                raise UserError(
                    f"--process_id must be in [0, {self.num_processes}), got {self.process_id}"
                )
        if self.coordinator_address is not None and ":" not in self.coordinator_address:
            raise UserError(
                f"--coordinator_address must be host:port, got {self.coordinator_address!r}"
            )


def initialize(config: ProcessConfig = ProcessConfig()) -> None:
    """Joins the other processes; must run before anything touches a jax device.

    On CPU-only hosts the cross-process collectives go through gloo."""
    config.check()
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
            local_device_ids=list(config.local_device_ids) if config.local_device_ids else None,
        )
    except (ValueError, RuntimeError) as e:
        message = " ".join(str(e).split())[:300]
        raise UserError(
            f"could not join the other processes ({message}); outside a TPU pod "
            "or SLURM job pass --coordinator_address, --num_processes and "
            "--process_id"
        ) from e
    log.info(
        "process %d of %d: %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def check_same_on_all_hosts(value: int, what: str) -> None:
    """A `UserError` when hosts disagree on `value` (e.g. the seed): they would otherwise
    train on different data orders or dropout masks and silently diverge."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    values = np.asarray(multihost_utils.process_allgather(np.int64(value)))
    if len(set(values.tolist())) != 1:
        raise UserError(
            f"the processes disagree on {what}: {values.tolist()}; pass the same "
            "configuration to every host"
        )
