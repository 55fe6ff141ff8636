"""Training: recipe, loss schedule, checkpoints and the loop (see :mod:`attnkit.train.loop`)."""

from .clip import clip_grad_norm
from .config import DataSettings, Recipe, TrainSettings, apply_override, recipe_from_dict
from .loop import TrainResult, train
from .schedule import SCHEDULES, learning_rate

__all__ = ["clip_grad_norm", "DataSettings", "Recipe", "TrainSettings", "apply_override", "recipe_from_dict",
           "TrainResult", "train", "SCHEDULES", "learning_rate"]
