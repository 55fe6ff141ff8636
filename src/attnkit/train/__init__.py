"""Training: recipe, loss schedule, checkpoints and the loop (see :mod:`attnkit.train.loop`)."""

from .config import DataSettings, Recipe, TrainSettings, apply_override, recipe_from_dict
from .loop import TrainResult, train
from .schedule import SCHEDULES, learning_rate

__all__ = ["DataSettings", "Recipe", "TrainSettings", "apply_override", "recipe_from_dict", "TrainResult", "train",
           "SCHEDULES", "learning_rate"]
