"""yolotr's log (yolotr/log.py): info from rank 0, warnings from every rank naming it, the level --quiet and
--verbose set, and the stderr of the moment. (The CLI's flags on a real process: tests/cli/test_console_output.py.)"""

from __future__ import annotations

import logging

import pytest

from yolotr.log import EVERY_RANK, set_verbosity
from yolotr.track.progress import Progress

log = logging.getLogger("yolotr.tests")


@pytest.fixture(autouse=True)
def normal_verbosity():
    set_verbosity("normal")
    yield
    set_verbosity("normal")


def test_rank_0_says_info_and_every_rank_says_its_warnings_naming_itself(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        log.info("converting")
        log.warning("skipped corrupt sample k")
        log.info("this rank holds the lock", extra=EVERY_RANK)

    assert capsys.readouterr().err.splitlines() == [
        "[yolotr] converting",
        "[yolotr rank 0] warning: skipped corrupt sample k",
        "[yolotr rank 0] this rank holds the lock",
        "[yolotr rank 1] warning: skipped corrupt sample k",
        "[yolotr rank 1] this rank holds the lock",
    ]


def test_one_process_says_its_lines_without_a_rank(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    log.warning("no room in /dev/shm")
    log.error("stopped")
    assert capsys.readouterr().err == "[yolotr] warning: no room in /dev/shm\n[yolotr] error: stopped\n"


def test_quiet_keeps_warnings_and_verbose_adds_debug(capsys):
    set_verbosity("quiet")
    log.info("hidden")
    log.warning("shown")
    set_verbosity("verbose")
    log.debug("details")

    assert capsys.readouterr().err == "[yolotr] warning: shown\n[yolotr] debug: details\n"
    with pytest.raises(ValueError, match="verbosity must be one of quiet, normal, verbose"):
        set_verbosity("loud")


def test_quiet_has_no_training_progress(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    shown = Progress(total=4, initial=0, enabled=True)  # stderr is not a terminal here: lines, not a bar
    shown.update(step=1, epoch=0, loss=0.5, images_per_s=10.0, skipped=0)
    set_verbosity("quiet")
    hidden = Progress(total=4, initial=0, enabled=True)
    hidden.update(step=2, epoch=1, loss=0.5, images_per_s=10.0, skipped=0)

    (line,) = capsys.readouterr().err.splitlines()  # none from the quiet one
    assert line.startswith("[yolotr] step 1/4 (25.0%) epoch 0 loss 0.500")
