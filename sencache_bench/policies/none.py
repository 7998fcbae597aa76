"""``none``: no cache; every call computed. Its runs must match the reference bit for bit."""

from __future__ import annotations

from typing import ClassVar, Literal

from .base import PolicyConfig


class NoneConfig(PolicyConfig):
    name: Literal["none"] = "none"
    ranks_agree: ClassVar[bool] = True  # it never reuses

    def make_policy(self):
        return None
