"""``none``: no cache; every call computed. Its runs must match the reference bit for bit."""

from __future__ import annotations

from typing import Literal

from .base import PolicyConfig


class NoneConfig(PolicyConfig):
    name: Literal["none"] = "none"

    def make_policy(self):
        return None
