"""Training and sampling: encode clips once into latents (:mod:`.latents`), bucketed deterministic batches
(:mod:`.data`), the DDP loop (:mod:`.loop`, ``python -m soraprep.train --config train.yaml``) and sampling
from a checkpoint (:mod:`.sample`). Importing this package does not import torch."""

from soraprep.train.config import ConfigError, TrainConfig, load_train_config

__all__ = ["ConfigError", "TrainConfig", "load_train_config"]
