"""How a run ends: the exit code and reason of the first error, kept while the work of stopping runs.

Stopping writes the last records, lands the last checkpoint, draws the plots, exports `weights/last.safetensors`,
finishes W&B and writes exit.json. On a full disk several of these fail one after the other; each failure is logged in
one line, and none replaces the error the run stopped for. A run that was ending cleanly ends with the first failure
that means something to the user instead: the storage failing (exit 74), or a step that must succeed (the last
checkpoint) failing at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from yolotr.errors import EXIT_FAILURE, EXIT_OK, StorageError, YolotrError

log = logging.getLogger(__name__)


class RunEnd:
    def __init__(self, code: int, reason: str, run_dir: Path) -> None:
        self.code = code
        self.reason = reason
        self.run_dir = run_dir
        self.storage: StorageError | None = None  # the first storage failure met while stopping

    def attempt(self, what: str, action: Callable[..., object], *args, essential: bool = False) -> None:
        """Runs `action(*args)`. A failure is logged in one line; a storage failure (or, when `essential`, any
        failure) turns a clean end into its own exit code, never an earlier error's."""
        try:
            action(*args)
        except YolotrError as error:
            self._failed(what, error, error.exit_code)
        except OSError as error:
            storage = StorageError.writing(error.filename or self.run_dir, error)
            if storage is not None:
                self._failed(what, storage, storage.exit_code)
            else:
                self._failed(what, error, EXIT_FAILURE if essential else None)
        except Exception as error:  # noqa: BLE001 - a plot or a W&B upload must not turn a stop into a traceback
            self._failed(what, error, EXIT_FAILURE if essential else None)

    def storage_failed(self, error: StorageError) -> None:
        """A storage failure met before stopping (a rank's ledger, metrics.jsonl): a clean end becomes exit 74."""
        self.storage = self.storage or error
        self._adopt(error.exit_code, str(error))

    def _failed(self, what: str, error: BaseException, code: int | None) -> None:
        text = str(error) if isinstance(error, YolotrError) else f"{type(error).__name__}: {error}"
        log.error(f"could not {what}: {text.splitlines()[0] if text else type(error).__name__}")
        if isinstance(error, StorageError):
            self.storage = self.storage or error
        if code is not None:
            self._adopt(code, text)

    def _adopt(self, code: int, reason: str) -> None:
        if self.code == EXIT_OK:
            self.code, self.reason = code, reason
