"""The process a command runs in, set up before jax or TensorFlow start: multi-process flags,
TensorFlow's start-up noise, JAX's persistent compilation cache, logging, and simulated CPU
devices (`ptune plan`). Everything here changes process-wide state: the library never calls
it; `ptune.cli` and the commands do, once each, before the work starts.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Sequence

from ptune.errors import UserError


def setup_logging() -> None:
    """ptune's own progress lines at INFO, everyone else's at WARNING, message text only."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("ptune").setLevel(logging.INFO)


PROCESS_FLAGS = ("--coordinator_address", "--num_processes", "--process_id")


def take_process_flags(argv: Sequence[str]) -> list[str]:
    """`--multiprocess` (auto-detect: TPU pod, SLURM) or `--coordinator_address=HOST:PORT
    --num_processes=N --process_id=I` join this process to the others before jax starts
    (see ptune.distributed); the other arguments are returned."""
    rest, values, multiprocess = [], {}, False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if arg == "--multiprocess":
            multiprocess = True
        elif name in PROCESS_FLAGS:
            if not eq or not value:
                raise UserError(f"{name} needs a value: {name}=VALUE")
            values[name[2:]] = value
        else:
            rest.append(arg)
    if multiprocess or values:
        from ptune import distributed

        try:
            config = distributed.ProcessConfig(
                coordinator_address=values.get("coordinator_address"),
                num_processes=int(values["num_processes"]) if "num_processes" in values else None,
                process_id=int(values["process_id"]) if "process_id" in values else None,
            )
        except ValueError:
            raise UserError("--num_processes and --process_id must be integers")
        distributed.initialize(config)
    return rest


def quiet_tensorflow() -> None:
    """Makes TensorFlow (seqio's data engine) start quietly whenever this process first imports
    it: its C++ start-up lines silenced and its GPUs hidden. ptune never computes with
    TensorFlow, and on a machine without a GPU its CUDA probing prints lines that read like
    errors. Nothing is imported here: a command that reads no data (`ptune plan`, `info`,
    unless a gin file imports a task module) never pays TensorFlow's start-up (about 5 s on 2
    cores). Only the import and the device probe are silenced: warnings raised later still
    show, and an import failure is re-raised after stderr is restored."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlow())


class _QuietTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The import system's finder for the top-level `tensorflow` module (only): it finds the
    module as the others would and loads it with stderr silenced, then hides the GPUs."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders find it, and its submodules
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # as if it had found it
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                try:
                    self._loader.exec_module(module)
                    try:  # listing devices probes CUDA, which prints its own error lines
                        module.config.set_visible_devices([], "GPU")
                    except (RuntimeError, ValueError):
                        pass  # already initialised by someone else: nothing to hide any more
                finally:
                    os.dup2(saved, 2)
        finally:
            os.close(saved)


COMPILE_CACHE_ENV = "PTUNE_COMPILATION_CACHE"


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, so a second run of the same configuration compiles
    nothing it compiled before. Directory: $PTUNE_COMPILATION_CACHE, default
    ~/.cache/ptune/jax; `PTUNE_COMPILATION_CACHE=off` turns it off."""
    setting = os.environ.get(COMPILE_CACHE_ENV, "")
    if setting.lower() in ("0", "off", "false", "no"):
        return
    directory = setting or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ptune", "jax"
    )
    import jax

    # Which compiles get a file is JAX's setting: those over a second by default
    # ($JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS).
    jax.config.update("jax_compilation_cache_dir", directory)


def simulate_cpu_devices(count: int) -> None:
    """Makes jax (not yet started) see `count` CPU devices, however many chips are here."""
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
