"""Resumable training state in Orbax: what trains, its optimizer state, step, data position.

Never the frozen model: that is re-read from its own checkpoint on resume. Orbax writes each
step into a temporary directory and renames it when complete, so a killed process leaves
either a whole checkpoint or none (leftover temporaries are ignored and cleaned up). A
checkpoint damaged after the fact (a truncated file, an emptied manifest) fails to restore:
`restore_latest` then falls back to the newest intact one and moves each damaged newer step
to MODEL_DIR/damaged_checkpoints/<step> (never deleted), one warning each.

Layout: MODEL_DIR/checkpoints/<step>/{state, meta}; `meta` is JSON (data position, metric
history for early stopping).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from ptune.errors import UserError

log = logging.getLogger("ptune")
PyTree = Any


class StateCheckpointer:
    """Saves and restores `step.TrainState` plus JSON metadata, keeping the newest `keep`."""

    def __init__(self, model_dir: str, keep: int = 3):
        if keep < 1:
            raise UserError(f"keep_checkpoints must be at least 1, got {keep}")
        self.directory = os.path.abspath(os.path.join(model_dir, "checkpoints"))
        self.damaged_directory = os.path.abspath(os.path.join(model_dir, "damaged_checkpoints"))
        self._keep = keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self._keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
        )
        return ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: PyTree, meta: dict) -> None:
        """Writes a complete checkpoint or, on failure, raises leaving earlier ones intact."""
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            self._manager.wait_until_finished()
        except (OSError, ValueError) as e:
            previous = [s for s in self.all_steps() if s != step]
            kept = f"checkpoint {max(previous)} is intact" if previous else "no earlier checkpoint"
            raise UserError(
                f"saving the checkpoint of step {step} in {self.directory} failed "
                f"({e.__class__.__name__}: {e}); {kept}"
            ) from e

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
        """Restores into the structure, shapes, dtypes and shardings of `abstract_state`."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise UserError(
                f"checkpoint {step} in {self.directory} does not match this run's "
                f"trainable parameters or optimizer ({e})"
            ) from e
        return restored["state"], dict(restored["meta"])

    def restore_latest(self, abstract_state: PyTree) -> Optional[tuple[int, PyTree, dict]]:
        """(step, state, meta) of the newest checkpoint that restores, or None if there is
        none. Damaged newer steps are moved aside with a warning each; if no step restores,
        nothing is moved and one line names each step's failure."""
        failures = []
        _quiet_late_reads(self.directory)  # before the first read: late ones come during it
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001  whatever a damaged file raises
                failures.append((step, _first_line(e)))
                continue
            if failures:
                self._set_aside(failures, step)
            return step, state, meta
        if failures:
            raise UserError(
                f"no checkpoint in {self.directory} restores: "
                + "; ".join(f"step {s}: {reason}" for s, reason in failures)
            )
        return None

    def _set_aside(self, failures: list[tuple[int, str]], intact: int) -> None:
        self._manager.close()
        os.makedirs(self.damaged_directory, exist_ok=True)
        for step, reason in failures:
            target = os.path.join(self.damaged_directory, str(step))
            suffix = 0
            while os.path.exists(target):
                suffix += 1
                target = os.path.join(self.damaged_directory, f"{step}.{suffix}")
            os.rename(os.path.join(self.directory, str(step)), target)
            log.warning(
                "checkpoint %d is damaged (%s): moved to %s; resuming from step %d",
                step,
                reason,
                target,
                intact,
            )
        self._manager = self._open()

    def close(self) -> None:
        self._manager.close()


class _ReadsNeverRetrieved(logging.Filter):
    """asyncio's "... exception was never retrieved" of a read of a checkpoint in one of
    `directories` (`_quiet_late_reads`)."""

    def __init__(self):
        super().__init__()
        self.directories: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        ours = "exception was never retrieved" in text
        return not (ours and any(d in text for d in self.directories))


def _quiet_late_reads(directory: str) -> None:
    """After a restore from `directory` fails, Orbax's other reads of that checkpoint still
    finish: each failed one is logged by asyncio ("Task/Future exception was never
    retrieved", with its traceback), and each whose result comes back from tensorstore's
    threads after Orbax closed its event loop prints a "RuntimeError: Event loop is closed"
    traceback (an unraisable exception). Dozens of lines of noise around the one warning that
    says what happened: exactly those are dropped (installed before a resume's first read).
    Every other unraisable exception goes on to the hook that was there before, every other
    asyncio record is logged."""
    asyncio_log = logging.getLogger("asyncio")
    quiet = next((f for f in asyncio_log.filters if isinstance(f, _ReadsNeverRetrieved)), None)
    if quiet is None:
        quiet = _ReadsNeverRetrieved()
        asyncio_log.addFilter(quiet)
    quiet.directories.add(directory)
    previous = sys.unraisablehook
    if getattr(previous, "drops_late_reads", False):
        return

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        late = isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
        frames = traceback.extract_tb(unraisable.exc_traceback) if late else []
        if not any(frame.name == "call_soon_threadsafe" for frame in frames):
            previous(unraisable)

    hook.drops_late_reads = True
    sys.unraisablehook = hook


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{error.__class__.__name__}: {line[:200]}"
