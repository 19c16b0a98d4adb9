"""Trainers: training functions of the user's own, registered by name."""

from workers.trainers._registry import TRAINERS, TrainerFunction

__all__ = ["TRAINERS", "TrainerFunction"]
