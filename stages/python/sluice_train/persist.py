"""What the train worker persists: the resume directory of checkpoints, and files and
directories written atomically (a temporary name renamed into place), so that a killed worker
leaves either the old file or the new one, never a torn one."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time

# Bump when the artifacts or the resume state change meaning: both are keyed or checked by it.
# 2: weight decay left out of the optimizer graph (the worker decays weights only, see
# regularize.py), and regression targets standardized.
# 3: the decay moved into the training graph, before the optimizer step instead of after it.
FORMAT = 3

# The resume state is written at most this often (and when the worker is asked to stop). Each save
# pauses the training and leaves the next epoch's first batches on cold caches, which on ~1 ms
# epochs (iris) was a visible share of the worker's overhead; on epochs longer than this every
# epoch is saved, as before. A kill without warning (SIGKILL, a crash) repeats at most this much
# training, with the same results: every epoch's order, dropout and augmentation are seeded by its
# number, so a run resumed from an earlier epoch retraces the same steps.
SAVE_EVERY_S = 1.0


class Resume:
    """The resume directory: `epoch-E.ckpt` (weights and optimizer state after epoch E),
    `best-E.ckpt` (weights of the best epoch so far) and `state-E.json`, written last, naming
    them. A crash at any point leaves either the previous state or the new one, both consistent.

    Every file gets a name of its own instead of replacing its predecessor: on ext4 (default
    `auto_da_alloc`), renaming over an existing file, or truncating one, flushes the new data to
    disk first, which blocked the worker ~4 ms per epoch. The previous epoch's files are removed
    once the new state names its successors."""

    def __init__(self, directory: str, config_key: str, api):
        self.api = api
        self.dir = directory
        self.config_key = config_key

    def _states(self) -> list[tuple[int, str]]:
        """(epoch, file name) of the state files present, newest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            number = name[len("state-"):-len(".json")] if name.startswith("state-") and name.endswith(".json") else ""
            if number.isdigit():
                found.append((int(number), name))
        return sorted(found, reverse=True)

    def load(self, msg) -> dict | None:
        states = self._states()
        if not states:
            return None
        path = os.path.join(self.dir, states[0][1])
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError) as e:
            msg.log(f"ignoring the unreadable resume state {path}: {e}", "warning")
            return None
        files = [st.get("checkpoint"), st.get("best_checkpoint")]
        if st.get("format") != FORMAT:
            msg.log(
                f"ignoring the resume state in {self.dir}: it was written by another version of the train worker "
                f"(format {st.get('format')!r}, this one resumes format {FORMAT}); training starts afresh",
                "warning",
            )
            return None
        if st.get("config") != self.config_key:
            msg.log(f"ignoring the resume state in {self.dir}: it was written for another configuration", "warning")
            return None
        if not all(f is None or os.path.isfile(os.path.join(self.dir, f)) for f in files):
            msg.log(f"ignoring the resume state in {self.dir}: a checkpoint it names is missing", "warning")
            return None
        return st

    def save(self, st: dict, state, improved: bool) -> None:
        api = self.api
        os.makedirs(self.dir, exist_ok=True)
        epoch = st["epoch"]
        st["checkpoint"] = f"epoch-{epoch}.ckpt"
        atomic_file(
            os.path.join(self.dir, st["checkpoint"]),
            lambda p: api.CheckpointState.save_checkpoint(state, p, include_optimizer_state=True),
        )
        if improved:
            self.save_best(st, state, epoch)
        current = f"state-{epoch}.json"
        atomic_file(
            os.path.join(self.dir, current),
            lambda p: write_json(p, {**st, "format": FORMAT, "config": self.config_key}, indent=None),
        )
        keep = {current, st["checkpoint"], st["best_checkpoint"]}
        for name in os.listdir(self.dir):
            if (name.endswith(".ckpt") or name.startswith("state-")) and name not in keep:
                os.remove(os.path.join(self.dir, name))

    def save_best(self, st: dict, state, epoch: int) -> None:
        """Writes `state`'s weights as the best epoch's; the next state file names them."""
        os.makedirs(self.dir, exist_ok=True)
        st["best_checkpoint"] = f"best-{epoch}.ckpt"
        atomic_file(
            os.path.join(self.dir, st["best_checkpoint"]), lambda p: self.api.CheckpointState.save_checkpoint(state, p)
        )

    def clear(self) -> None:
        """After the outputs are written the checkpoints are dead weight, and a later rerun of the
        stage should train afresh."""
        if not os.path.isdir(self.dir):
            return
        for name in os.listdir(self.dir):
            if name.startswith("state-") or name.endswith(".ckpt"):
                os.remove(os.path.join(self.dir, name))
        with contextlib.suppress(OSError):  # left in place if something else lives there
            os.rmdir(self.dir)


def write_json(path: str, value, indent: int | None = 2) -> None:
    """json.dumps, not json.dump: dump streams through the pure-Python encoder, which made
    rewriting the growing resume state each epoch the slowest part of small trainings."""
    with open(path, "w") as f:
        f.write(json.dumps(value, indent=indent) + "\n")


def atomic_file(final: str, write) -> None:
    """Calls write(tmp) on a temporary name in the same directory, then renames it over `final`.
    The temporary keeps the extension: ORT picks formats by it."""
    directory, name = os.path.split(final)
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(directory, f".{stem}.tmp-{os.getpid()}{ext}")
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def mkdtemp(parent: str, prefix: str) -> str:
    """mkdtemp, with the permissions of a plain mkdir: these directories become outputs."""
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def atomic_dir(final: str, fill) -> None:
    parent = os.path.dirname(final)
    tmp = mkdtemp(parent, f".{os.path.basename(final)}.tmp-")
    try:
        fill(tmp)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Saver:
    """When the resume state is saved (`SAVE_EVERY_S`), and what bridges the epochs in between: the
    best epoch's weights kept in memory until a save writes them, and a SIGTERM handler. SIGTERM
    while epochs are unsaved lets the current epoch finish, saves it, and then ends the process by
    the signal as before; with nothing unsaved it ends the process at once. Epochs go unsaved only
    while they are shorter than `SAVE_EVERY_S`, so a stop waits for less than that."""

    def __init__(self, resume: Resume, state, module):
        self.resume, self.state, self.module = resume, state, module
        self.saved_at = time.monotonic()
        self.unsaved = False
        # The best epoch's trainable parameters (an OrtValue) while they are not on disk.
        self.best_weights = None
        self.stop_requested = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if not self.unsaved:
            _die_of(signum)
        self.stop_requested = True

    def epoch_done(self, st: dict, improved: bool, last: bool) -> None:
        """After an epoch's bookkeeping (`st` updated). The last epoch is not saved unless the
        worker is stopping: the outputs, written next, supersede it."""
        due = self.stop_requested or (not last and time.monotonic() - self.saved_at >= SAVE_EVERY_S)
        if improved and not due:
            try:
                self.best_weights = self.module.get_contiguous_parameters(trainable_only=True)
            except Exception:  # parameters one float32 buffer cannot hold: to disk, as before
                due = True
        if due:
            self.save(st, improved)
        else:
            self.unsaved = True
        if self.stop_requested:
            _die_of(signal.SIGTERM)

    def save(self, st: dict, improved: bool) -> None:
        if not improved and self.best_weights is not None:
            # The best epoch came after the last save: its weights go to disk under its number,
            # through the live tensors (copied in and back exactly, as the optimizer left them).
            current = self.module.get_contiguous_parameters(trainable_only=True)
            self.module.copy_buffer_to_parameters(self.best_weights, trainable_only=True)
            self.resume.save_best(st, self.state, st["best"]["epoch"])
            self.module.copy_buffer_to_parameters(current, trainable_only=True)
        self.resume.save(st, self.state, improved)
        self.best_weights = None
        self.unsaved = False
        self.saved_at = time.monotonic()

    def load_best(self) -> bool:
        """Puts the best epoch's weights into the module if they are held in memory."""
        if self.best_weights is None:
            return False
        self.module.copy_buffer_to_parameters(self.best_weights, trainable_only=True)
        return True

    def close(self) -> None:
        """Training is over: a SIGTERM from now on ends the process at once (a stop already
        asked for does so now)."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if self.stop_requested:
            _die_of(signal.SIGTERM)


def _die_of(signum: int) -> None:
    """Ends the process by `signum` with its default action, as an unhandled signal would."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
