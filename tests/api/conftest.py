"""The evaluation tests' tiny synthetic set (9 val images of 64 px, 3 classes)."""

from tests.eval.conftest import synth_data  # noqa: F401
