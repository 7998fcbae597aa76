"""A policy's typed config (:class:`PolicyConfig`) and its budget knob (:class:`Knob`): what a spec names and
``match`` searches; ``make_policy`` builds the rule (:mod:`.decision`) that the hooks (:mod:`.base`) run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

if TYPE_CHECKING:
    import torch

    from .decision import CachePolicy


@dataclass(frozen=True)
class Knob:
    """A policy's budget knob for ``sencache-bench match``: the field that trades compute for fidelity.

    ``more_compute``: which way the value moves to compute more calls ("lower": a threshold such as
    SenCache's eps_main or TeaCache's thresh; "higher": a budget fraction). ``low``/``high``: the search
    range; ``integer``: the knob takes integers (static ``every``). ``monotone``: NFE moves one way with the
    value (bisection is valid); otherwise ``match`` scans the range and says so.
    """

    field: str
    more_compute: Literal["lower", "higher"]
    low: float
    high: float
    integer: bool = False
    monotone: bool = True


class PolicyConfig(BaseModel):
    """Base of every policy's typed config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the budget knob ``match`` searches (None: the policy has no knob and ``match`` refuses it)
    knob: ClassVar[Knob | None] = None
    #: what the policy calibrates for one transformer (a profile, coefficients, ratios, a plan); None: nothing.
    #: A model with several experts (Wan 2.2) refuses such a policy unless it calibrates per expert (``per_expert``).
    calibration: ClassVar[str | None] = None
    #: True when the calibration is made and loaded per expert (calibration/experts.py): such a policy runs on
    #: a model with several experts, each expert's hooks reading their own expert's part of the file
    per_expert: ClassVar[bool] = False
    _inputs: dict = PrivateAttr(default_factory=dict)
    #: the expert the next ``attach`` is for (None: a single-transformer model); set by the session
    _expert: str | None = PrivateAttr(default=None)

    def for_expert(self, expert: str | None):
        """Say which expert the next ``attach`` installs hooks on (the runner sets it before each attach)."""
        self._expert = expert
        return self

    def inputs(self) -> dict[str, dict]:
        """What the last prepare/attach resolved outside the spec's fields: a profile calibrated on the fly,
        a coefficients or ratios file (path and sha256), a published table. Records keep it, so a result
        names the exact inputs even when the spec left them to defaults."""
        return {k: dict(v) for k, v in self._inputs.items()}

    def _note_input(self, name: str, source: str | Path) -> None:
        """Remember one resolved input: a file (path and sha256) or a named published source."""
        from ..results.store import sha256_file

        path = Path(source)
        self._inputs[name] = ({"path": str(path), "sha256": sha256_file(path)} if path.is_file()
                              else {"source": str(source)})

    def make_policy(self) -> CachePolicy | None:
        raise NotImplementedError

    def fixed_schedule(self) -> bool:
        """True when which calls compute does not depend on the inputs (a schedule fixed by the config): ``match``
        then measures NFE on one tuning video instead of all, and the conformance kit checks the claim."""
        return False

    def priced_by_replay(self) -> bool:
        """True when the policy skips work inside the blocks, where the call trace cannot see it: the run's
        FLOPs then come from an untimed counted replay of the whole cached generation."""
        return False

    def attach(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], recorder=None) -> None:
        """Install the policy's hooks (diffusers' built-ins override this with ``enable_cache``)."""
        policy = self.make_policy()
        if policy is not None:
            from .base import apply_policy

            apply_policy(transformer, blocks, policy, recorder, label=getattr(self, "name", None))

    def detach(self, transformer: torch.nn.Module) -> None:
        from .base import remove_policy

        remove_policy(transformer)

    def setting(self) -> str:
        """A short, stable label of the parameters, used to group results in tables."""
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items() if k != "name"]
        return ",".join(parts) if parts else "default"
