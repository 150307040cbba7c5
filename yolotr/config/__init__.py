"""The bottom layer: every setting of yolotr as typed dataclasses, and their loading from yaml.

    run.py        the training run's tree (`Config`): train, guard, checkpoint, val, ... one docstring per field
    model.py      the Transformer blocks' switches and the loss hyperparameters
    augment.py    the augmentation hyperparameters
    load.py       yaml + `key.path=value` overrides -> a validated `Config`; errors name the key and the file
    tree.py       the dataclass <-> plain data machinery behind it
    reference.py  docs/config.md's table, generated from the docstrings

Every other package may import this one; it imports none of them.
"""

from yolotr.config.load import dump_config, load_config
from yolotr.config.run import Config
from yolotr.config.tree import ConfigError

__all__ = ["Config", "ConfigError", "dump_config", "load_config"]
