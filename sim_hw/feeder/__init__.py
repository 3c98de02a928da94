"""The feeder's physics (OpenDSS), its plain-data solution and its daily profiles.

``Feeder``, ``FeederError`` and ``PvSite`` load lazily: importing :mod:`sim_hw.feeder.solution` (as every
device model does) must not pull in OpenDSS (~0.3 s and the engine's memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim_hw.feeder.profiles import Profile, ProfileError, irradiance_profile, load_profile
from sim_hw.feeder.solution import Solution, Terminal

if TYPE_CHECKING:
    from sim_hw.feeder.model import Feeder, FeederError, PvSite

__all__ = [
    "Feeder",
    "FeederError",
    "Profile",
    "ProfileError",
    "PvSite",
    "Solution",
    "Terminal",
    "irradiance_profile",
    "load_profile",
]

_LAZY = ("Feeder", "FeederError", "PvSite")


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from sim_hw.feeder import model

        return getattr(model, name)
    raise AttributeError(f"module 'sim_hw.feeder' has no attribute {name!r}")
