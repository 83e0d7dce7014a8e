"""Training protocol-following models with the project's own pipeline (``dac train``).

See ``docs/training.md``; the recipe of the shipped model is
``configs/dac-tiny-focus-weight.json`` (the runs that led to it: ``research/training-log.md``).
The loop lives in :mod:`dac.train.loop` (imported on use: it pulls in torch and transformers),
the model card's evaluation in :mod:`dac.train.evaluate` and its tables in :mod:`dac.train.card`.
"""

from .config import ModelShape, Stage, TokenizerSpec, TrainConfig

__all__ = ["ModelShape", "Stage", "TokenizerSpec", "TrainConfig"]
