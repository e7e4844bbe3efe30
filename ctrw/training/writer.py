"""Epoch checkpoints written on a background thread, reported only once they are durable.

At an epoch's end the loop copies what the checkpoint needs (``TrainState.checkpoint_writer``:
tensors to the CPU, metadata as JSON values) and hands the write to a ``CheckpointWriter``;
serialising, hashing, fsync and rename then overlap the next epoch's first batches.

Crash safety is the synchronous save's: the write itself is ``save_checkpoint``'s atomic
write-fsync-rename, so after a kill ``last`` holds the previous complete epoch or the new one
(resume then redoes at most the epoch whose write was in flight). And an epoch counts as done
only once its write is durable: its record (``hooks.on_epoch``) is reported after the write has
finished, and while a write is in flight the next epoch's progress is not reported either
(``DeferredHooks``), so no caller ever sees progress past a checkpoint that a crash could lose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ctrw.hooks import Hooks, Progress

__all__ = ["CheckpointWriter", "DeferredHooks"]


class CheckpointWriter:
    """At most one checkpoint write in flight; ``done`` runs on the caller's thread afterwards.

    The hooks (a job's database session) are not thread-safe, so the background thread only
    writes; the report after it (``done``) runs in ``wait`` or ``poll`` on the training thread.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done: Callable[[], None] | None = None

    def submit(self, write: Callable[[], None], done: Callable[[], None]) -> None:
        """Start ``write`` on a background thread (after the previous one has finished)."""
        self.wait()

        def run() -> None:
            try:
                write()
            except BaseException as e:  # re-raised on the training thread by wait()
                self._error = e

        self._done = done
        self._thread = threading.Thread(target=run, name="ctrw-checkpoint")
        self._thread.start()

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> bool:
        """Finish a write that has completed (reporting it); True when none is in flight now."""
        if self.in_flight:
            return False
        self.wait()
        return True

    def wait(self) -> None:
        """Block until the write in flight (if any) is durable, then report it.

        Raises:
            The write's exception (a full disk, say): the epoch is then not reported as done.
        """
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        error, self._error = self._error, None
        done, self._done = self._done, None
        if error is not None:
            raise error
        if done is not None:
            done()


class DeferredHooks(Hooks):
    """The caller's hooks, with progress held back while a checkpoint write is in flight.

    Each progress call first completes a finished write (so its epoch record is reported before
    any later progress); while the write is still running the progress call is dropped (progress
    is a snapshot, the next one supersedes it). Cancellation is asked as usual.
    """

    def __init__(self, hooks: Hooks, writer: CheckpointWriter) -> None:
        self.hooks, self.writer = hooks, writer

    def on_progress(self, progress: Progress) -> None:
        if self.writer.poll():
            self.hooks.on_progress(progress)

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.hooks.on_epoch(record)

    def on_result(self, row: dict[str, Any]) -> None:
        self.hooks.on_result(row)

    def should_cancel(self) -> bool:
        return self.hooks.should_cancel()
