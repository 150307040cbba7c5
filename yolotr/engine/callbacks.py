"""User callbacks by ultralytics' event names (`YOLO.add_callback("on_train_epoch_end", fn)`), dispatched from two
hooks (engine/hooks.py): one registered before every other hook, one after, so that each event sees what it names.

    on_pretrain_routine_start, on_pretrain_routine_end, on_train_start   the run is set up, before the first step
    on_train_epoch_start     before an epoch's first step
    on_train_batch_start     before each optimizer step (its micro-batches)
    on_train_batch_end       after the step was judged and logged
    on_train_epoch_end       after the epoch's last step, before its validation
    on_val_start, on_val_end around a validation (every `val.every_epochs` epochs, and the final one)
    on_fit_epoch_end         after the epoch's validation (or after the epoch, when none was due)
    on_model_save            after each checkpoint (a validation's: after on_fit_epoch_end, as in ultralytics)
    on_train_end             after the last step, its final validation and checkpoint
    teardown                 the run ends, however it ends

Each callback is called with a `TrainerView`, a read-only window on the trainer. A callback that raises stops the
run: the rest of its event's callbacks (and any later ones) are not called, the ranks agree on the failure at the end
of the step (one small all-reduce per step when there are several ranks and callbacks), and every rank stops with
exit code 1 and one line naming the callback and the event; `YOLO.train` then raises the callback's exception.
`teardown` callbacks still run (clean-up); one raising there is reported the same way, the run being over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from yolotr.distributed import all_gather_object, all_ranks
from yolotr.engine.hooks import HookBase
from yolotr.errors import YolotrError

if TYPE_CHECKING:
    from yolotr.engine.trainer import Trainer

log = logging.getLogger(__name__)

EVENTS = ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start", "on_train_epoch_start",
          "on_train_batch_start", "on_train_batch_end", "on_train_epoch_end", "on_val_start", "on_val_end",
          "on_fit_epoch_end", "on_model_save", "on_train_end", "teardown")

Callback = Callable[["TrainerView"], object]


class CallbackFailed(YolotrError):
    """A user callback raised: the run stops on every rank (exit code 1, like any crash of the training code)."""


class Callbacks:
    """Event name → the callbacks registered for it, in the order they were added."""

    def __init__(self) -> None:
        self.registered: dict[str, list[Callback]] = {event: [] for event in EVENTS}
        self.failure: tuple[str, str, BaseException] | None = None
        """(callback name, event, exception) of the callback that stopped the last run, if one did."""

    def add(self, event: str, fn: Callback) -> None:
        if event not in self.registered:
            raise ValueError(f"unknown callback event {event!r}; the events are: {', '.join(EVENTS)}")
        if not callable(fn):
            raise TypeError(f"the callback for {event} must be callable, got {type(fn).__name__}")
        self.registered[event].append(fn)

    def clear(self, event: str) -> None:
        if event not in self.registered:
            raise ValueError(f"unknown callback event {event!r}; the events are: {', '.join(EVENTS)}")
        self.registered[event] = []

    def __bool__(self) -> bool:
        return any(self.registered.values())

    def around(self, hooks: list[HookBase]) -> list[HookBase]:
        """`hooks` with the dispatching hooks around them (none when nothing is registered)."""
        self.failure = None  # this run's, if any
        if not self:
            return hooks
        dispatch = _Dispatch(self)
        return [_First(dispatch), *hooks, _Last(dispatch)]


class TrainerView:
    """What a callback sees of the trainer. Read-only: setting an attribute raises. `model` and `ema` are the live
    modules, to read (evaluate, save a copy), not to change. `metrics` and `train_metrics` are rank 0's records."""

    __slots__ = ("_dispatch", "_trainer")
    _trainer: Trainer
    _dispatch: _Dispatch

    def __init__(self, trainer: Trainer, dispatch: _Dispatch) -> None:
        object.__setattr__(self, "_trainer", trainer)
        object.__setattr__(self, "_dispatch", dispatch)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"the trainer's view is read-only: cannot set {name!r}")

    @property
    def epoch(self) -> int:
        """The epoch being trained (0-based)."""
        return self._dispatch.epoch

    @property
    def epochs(self) -> int:
        return self._trainer.cfg.train.epochs

    @property
    def step(self) -> int:
        """Optimizer steps attempted so far (skipped ones included)."""
        return self._trainer.step

    @property
    def total_steps(self) -> int:
        return self._trainer.total_steps

    @property
    def metrics(self) -> dict:
        """The last validation's figures (map50, map, precision, recall, fitness, ...); {} before the first."""
        return _fields(self._trainer.logger.latest.get("val"))

    @property
    def train_metrics(self) -> dict:
        """The last `train` record (losses, learning rates, skipped steps, ...); {} before the first."""
        return _fields(self._trainer.logger.latest.get("train"))

    @property
    def best_fitness(self) -> float | None:
        return self._trainer.best_fitness

    @property
    def save_dir(self) -> Path:
        """The run folder (weights/, metrics.jsonl, exit.json, ...)."""
        return self._trainer.run_dir

    run_dir = save_dir

    @property
    def model(self):
        return self._trainer.model

    @property
    def ema(self):
        return self._trainer.ema.module if self._trainer.ema is not None else None

    @property
    def names(self) -> list[str]:
        return list(self._trainer.data.names)

    @property
    def rank(self) -> int:
        return self._trainer.runtime.rank

    @property
    def world_size(self) -> int:
        return self._trainer.runtime.world_size

    def __repr__(self) -> str:
        return f"TrainerView(epoch={self.epoch}, step={self.step}/{self.total_steps}, save_dir={str(self.save_dir)!r})"


def _fields(record: dict | None) -> dict:
    return {k: v for k, v in (record or {}).items() if k not in ("kind", "time")}


class _Dispatch:
    """Calls the callbacks of an event and remembers the first failure; only `agree` (at the end of a hook point
    every rank reaches alike) stops the run, so that no rank leaves a collective the others are waiting in."""

    def __init__(self, callbacks: Callbacks) -> None:
        self.callbacks = callbacks
        self.view: TrainerView | None = None
        self.epoch = 0
        self.in_epoch = False
        self.ended_epoch = False
        self.validating = False
        self.save_pending = False  # a checkpoint of a validation: reported after it, as ultralytics orders them
        self.failure: tuple[str, str, BaseException] | None = None

    def fire(self, event: str) -> None:
        if self.failure is not None and event != "teardown":
            return  # the run is stopping: no callback runs after the one that raised, but the clean-up
        view = self.view
        assert view is not None  # made when the run starts, before the first event
        for fn in self.callbacks.registered[event]:
            try:
                fn(view)
            except Exception as error:  # noqa: BLE001 - the user's code: whatever it raises stops the run, named
                failure = (getattr(fn, "__qualname__", None) or repr(fn), event, error)
                if self.failure is None:
                    self.failure = self.callbacks.failure = failure
                if event == "teardown":  # the run's outcome is already decided: this line is its only report
                    log.error(self.describe(failure))
                return

    @staticmethod
    def describe(failure: tuple[str, str, BaseException]) -> str:
        name, event, error = failure
        return f"callback {name} ({event}) raised {type(error).__name__}: {error}"

    def agree(self) -> None:
        """Raises CallbackFailed on every rank when a callback failed on any."""
        if all_ranks(self.failure is None):
            return
        reports = all_gather_object(self.describe(self.failure) if self.failure is not None else None)
        rank, message = next((r, m) for r, m in enumerate(reports) if m is not None)
        raise CallbackFailed(message if len(reports) == 1 else f"rank {rank}: {message}")


class _First(HookBase):
    """The events that come before the other hooks act: set-up, epoch and step starts, the step's end, saves."""

    def __init__(self, dispatch: _Dispatch) -> None:
        self.dispatch = dispatch

    def before_train(self) -> None:
        d = self.dispatch
        d.view = TrainerView(self.trainer, d)
        d.epoch = self.trainer.stream.epoch
        for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"):
            d.fire(event)

    def before_step(self) -> None:
        d = self.dispatch
        d.epoch = self.trainer.stream.epoch  # the epoch of the batches this step draws
        if not d.in_epoch:
            d.in_epoch = True
            d.fire("on_train_epoch_start")
        d.fire("on_train_batch_start")

    def after_epoch(self, epoch: int) -> None:
        self.dispatch.in_epoch = False
        self.dispatch.ended_epoch = True

    def after_step(self) -> None:  # before the validation hook validates a finished epoch
        d = self.dispatch
        d.fire("on_train_batch_end")
        if d.ended_epoch:
            d.fire("on_train_epoch_end")
        if self.trainer.val_pending is not None:
            d.validating = True
            d.fire("on_val_start")

    def after_checkpoint(self) -> None:
        if self.dispatch.validating:
            self.dispatch.save_pending = True
        else:
            self.dispatch.fire("on_model_save")

    def after_train(self) -> None:  # before the final validation
        self.dispatch.validating = True
        self.dispatch.fire("on_val_start")

    def on_stop(self, code: int) -> None:
        self.dispatch.fire("teardown")  # not agreed on: the run is ending anyway, and the API reports it


class _Last(HookBase):
    """The events that follow the other hooks (a validation's end, the run's end), and the agreement."""

    def __init__(self, dispatch: _Dispatch) -> None:
        self.dispatch = dispatch

    def before_train(self) -> None:
        self.dispatch.agree()

    def after_step(self) -> None:
        d = self.dispatch
        if d.validating:
            d.validating = False
            d.fire("on_val_end")
        if d.ended_epoch:
            d.ended_epoch = False
            d.fire("on_fit_epoch_end")
        self._saved()
        d.agree()

    def after_train(self) -> None:
        d = self.dispatch
        d.validating = False
        d.fire("on_val_end")
        self._saved()
        d.fire("on_train_end")
        d.agree()

    def _saved(self) -> None:
        if self.dispatch.save_pending:
            self.dispatch.save_pending = False
            self.dispatch.fire("on_model_save")
