"""MODEL_DIR's owner: its layout, the fingerprint resumes check, the records, one writer, and
an `--overwrite` that cannot lose a run to a bad command.

    run_dir = RunDir(model_dir, fingerprint, overwrite=cfg.overwrite)
    run_dir.check()                # read-only: another run's MODEL_DIR is refused here
    ...                            # every other check: model, checkpoint, data, prompt files
    with run_dir.open(config_text):    # the lock; the replaced run moved aside
        ...                        # restore, train
        run_dir.saving()           # before each checkpoint: the records, once
        run_dir.saved()            # after each: the replaced run deleted, once

Layout:
    config.gin, run.json          the configuration (gin) and the fingerprint resumes check
    checkpoints/<step>/           Orbax: trainable params, optimizer state, step, data position
    numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.{npy,safetensors}; .../best/
    metrics.jsonl, train/ (TensorBoard events), eval/<split>_step_<step>.json
    summary.json                  task, model, prompt, counts, best score, steps, wall time
    random_init/, model/          random frozen weights (the demo's contrast run); the trained
                                  model (`export_model`), each a ptune checkpoint
    .lock                         while a command writes: "ptune pid P on host H since T"
    .replaced_run/                during `--overwrite`, the old run until the new one's first
                                  checkpoint is written
    damaged_checkpoints/<step>/   a checkpoint that failed to restore, kept for inspection

The rules:
- One writer: `open` takes an exclusive advisory lock (`fcntl.flock` on MODEL_DIR/.lock) for
  the run's life; a second command is refused naming the holder. The kernel releases the lock
  of a dead process, so a lock file left behind is taken over with one log line. On several
  hosts the primary process holds it (the others write nothing to MODEL_DIR).
- Nothing is written before every check has passed: `check` only reads, and the caller opens
  the directory after its own checks. A failure before the first checkpoint of this command
  leaves MODEL_DIR as it was: what this command wrote is removed and a replaced run is put
  back; a killed process's replaced run is put back by the next command on MODEL_DIR.
- The records describe the state: a resume whose fingerprint differs is refused like any
  other change, and `config.gin`/`run.json` are (re)written only by a command that then
  writes a checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shutil
import socket
from typing import Any, Iterator, Optional

from ptune import atomic
from ptune.errors import UserError

log = logging.getLogger("ptune")

RECORDS = ("run.json", "config.gin")
# Everything a run writes into MODEL_DIR (what `--overwrite` moves aside, as one run).
RUN_FILES = RECORDS + (
    "checkpoints",
    "numpy_checkpoints",
    "train",
    "eval",
    "random_init",
    "model",
    "metrics.jsonl",
    "summary.json",
    "damaged_checkpoints",
)
LOCK = ".lock"
REPLACED = ".replaced_run"


# Fingerprint keys added after runs were recorded without them: the value that reproduces how
# such a run ran, and the flag that resumes it so.
LATER_KEYS = {"group_by_length": (0, "--gin.GROUP_BY_LENGTH=0")}


class RunDir:
    """One training run's MODEL_DIR, for the command that writes it.

    fingerprint: what must not change on resume (JSON values; see `TrainConfig.fingerprint`).
    primary: whether this process writes (process 0); the others only read.
    """

    def __init__(self, path: str, fingerprint: dict, *, overwrite: bool, primary: bool = True):
        self.path = path
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.overwrite = overwrite
        self.primary = primary
        self.replacing = False  # an existing run with another fingerprint is to be replaced
        self._created = False
        self._lock_fd: Optional[int] = None
        self._config_text = ""
        self._recorded = False
        self._saved = False
        self._had_run = False

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # ------------------------------------------------------------------ before any work

    def check(self) -> None:
        """MODEL_DIR is a writable directory and holds this run, no run, or (with
        `--overwrite`) a run to replace. Writes nothing in MODEL_DIR: a MODEL_DIR that does
        not exist yet is probed by creating and removing an empty directory in its nearest
        existing parent (`atomic.check_writable_dir`). A replaced run a killed command left
        aside is put back first, under the lock."""
        atomic.check_writable_dir(self.path, "MODEL_DIR")
        if os.path.isdir(self.file(REPLACED)) and self.primary:
            with self._locked():
                _recover(self.path)
        recorded = self.previous_fingerprint()
        self._had_run = recorded is not None
        previous = recorded  # a record from an older ptune ran as that version did:
        if recorded is not None:
            previous = {**{k: v for k, (v, _) in LATER_KEYS.items()}, **recorded}
        # any other key the run did not record is not a change.
        changed = sorted(k for k in previous or {} if previous.get(k) != self.fingerprint.get(k))
        if not changed:
            return
        if not self.overwrite:
            resume = [LATER_KEYS[k][1] for k in changed if k in LATER_KEYS and k not in recorded]
            raise UserError(
                f"MODEL_DIR {self.path} holds a run with a different configuration (changed: "
                f"{', '.join(changed)}); "
                + (f"to resume it as it ran, pass {' '.join(resume)}; or " if resume else "")
                + "choose another MODEL_DIR, or pass --overwrite to replace that run (it is "
                "kept until the new run's first checkpoint is written)"
            )
        self.replacing = True

    def previous_fingerprint(self) -> Optional[dict]:
        path = self.file("run.json")
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(
                f"{path} is not readable JSON ({e}); it records which run MODEL_DIR holds: "
                "restore it, or choose another MODEL_DIR"
            ) from e

    # ------------------------------------------------------------------ the writing command

    @contextlib.contextmanager
    def open(self, config_text: str = "") -> Iterator["RunDir"]:
        """Holds MODEL_DIR for a command that writes it (after every check has passed)."""
        self._config_text = config_text
        if not self.primary:
            yield self
            return
        with self._locked():
            if self.replacing:
                log.warning(
                    "--overwrite: the run in %s is moved aside to %s and deleted once this "
                    "run's first checkpoint is written",
                    self.path,
                    self.file(REPLACED),
                )
                _move_aside(self.path)
            try:
                yield self
            except BaseException:
                if not self._saved:
                    self._undo()
                raise

    def saving(self) -> None:
        """Before a checkpoint is written: the records of this run, once per command."""
        if not self.primary or self._recorded:
            return
        atomic.write_json(self.file("run.json"), self.fingerprint)
        if self._config_text:
            atomic.write_text(self.file("config.gin"), self._config_text)
        self._recorded = True

    def saved(self) -> None:
        """After a checkpoint is written: the replaced run is no longer needed."""
        if not self.primary or self._saved:
            return
        self._saved = True
        if os.path.isdir(self.file(REPLACED)):
            shutil.rmtree(self.file(REPLACED))
            log.info("deleted the replaced run (this run's first checkpoint is written)")

    def write_summary(self, summary: dict) -> None:
        """summary.json, by a command that wrote a checkpoint (or the first one to finish)."""
        if self.primary and (self._saved or not os.path.exists(self.file("summary.json"))):
            atomic.write_json(self.file("summary.json"), summary)

    def _undo(self) -> None:
        """A command that fails before its first checkpoint leaves MODEL_DIR as it found it."""
        if os.path.isdir(self.file(REPLACED)):
            _recover(self.path)
            log.warning(
                "the new run failed before its first checkpoint: the replaced run in %s is "
                "restored",
                self.path,
            )
        elif not self._had_run:
            for name in RUN_FILES:
                _remove(self.file(name))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_fd is not None:  # already held by this command
            yield
            return
        created = not os.path.exists(self.path)
        os.makedirs(self.path, exist_ok=True)
        self._created = self._created or created
        self._lock_fd = _acquire(self.file(LOCK), self.path)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):  # MODEL_DIR removed under the run
                os.unlink(self.file(LOCK))
            os.close(self._lock_fd)
            self._lock_fd = None
            if self._created and os.path.isdir(self.path) and not os.listdir(self.path):
                os.rmdir(self.path)


def _holder() -> str:
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"ptune pid {os.getpid()} on host {socket.gethostname()} since {since}"


def _acquire(lock_path: str, model_dir: str) -> int:
    """An exclusive lock on `lock_path`, or one line naming its holder. The file is unlinked
    when released, so after taking the lock the path must still be the file locked."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(
                f"MODEL_DIR {model_dir} is in use by {holder or 'another ptune command'} "
                f"(lock {lock_path}); wait for it to finish, or choose another MODEL_DIR"
            ) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released and unlinked between our open and flock: try again
            os.close(fd)
            continue
        left = _read_holder(fd)
        if left:
            log.warning(
                "taking over the lock of MODEL_DIR %s left by %s (no longer running)",
                model_dir,
                left,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder() + "\n").encode(), 0)
        return fd


def _read_holder(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()


def _move_aside(path: str) -> None:
    """The old run's files into MODEL_DIR/.replaced_run, one rename each (never a copy)."""
    aside = os.path.join(path, REPLACED)
    os.makedirs(aside)
    for name in RUN_FILES:
        if os.path.lexists(os.path.join(path, name)):
            os.rename(os.path.join(path, name), os.path.join(aside, name))


def _recover(path: str) -> None:
    """Puts a replaced run back, unless the replacing run wrote a checkpoint (then the
    replacement is complete and the old run goes)."""
    aside = os.path.join(path, REPLACED)
    if _has_checkpoint(os.path.join(path, "checkpoints")):
        shutil.rmtree(aside)
        log.info("deleted the run %s replaced (its replacement has a checkpoint)", path)
        return
    for name in RUN_FILES:
        _remove(os.path.join(path, name))
    for name in os.listdir(aside):
        os.rename(os.path.join(aside, name), os.path.join(path, name))
    os.rmdir(aside)
    log.warning("restored the run in %s that an interrupted --overwrite had moved aside", path)


def _has_checkpoint(directory: str) -> bool:
    return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


class MetricsLog:
    """metrics.jsonl plus TensorBoard scalars under train/ (process 0 writes, others stay
    silent). On resume, what a killed run logged past its checkpoint is forgotten."""

    def __init__(self, model_dir: str, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(model_dir, "metrics.jsonl")
        self._events = os.path.join(model_dir, "train")
        self._writer = None
        if enabled and os.path.exists(self.path):
            kept = read_metrics(self.path, upto_step=resume_step)
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            with open(self.path, encoding="utf-8", errors="replace") as f:
                if f.read() != text:
                    atomic.write_text(self.path, text)

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "split": split, **values}, sort_keys=True) + "\n")
        if self._writer is None:
            from clu import metric_writers

            self._writer = metric_writers.create_default_writer(self._events, asynchronous=False)
        scalars = {f"{split}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        self._writer.write_scalars(step, scalars)
        self._writer.flush()


def read_metrics(path: str, upto_step: Optional[int] = None) -> list[dict[str, Any]]:
    """metrics.jsonl's records (those at or before `upto_step`); a torn last line (a write
    cut by a kill) is dropped with a warning; a damaged line elsewhere is one line of error."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                log.warning("%s: dropped a torn last line (%d characters)", path, len(line))
                continue
            raise UserError(f"{path}, line {number}: not valid JSON ({e.msg})") from e
        if upto_step is None or record.get("step", 0) <= upto_step:
            records.append(record)
    return records
