"""The SenCache supplement's diagnostic: how much the denoiser output changes from one step to the next.

Recorded during uncached reference runs: for every transformer call, the mean absolute change of its
output against the previous call of the same CFG branch, |f(x_tk, tk) - f(x_tk-1, tk-1)|_1 averaged
over elements (and the relative L1, sum|diff| / sum|previous|, TeaCache's output-side indicator).

A plain torch forward hook on the transformer: it fires after the whole diffusers hook chain, so the
call recorder has already appended the call (branch, step, timestep). Values stay on the device as
0-d tensors during the generation (no host sync per call) and are read once at the end.
"""

from __future__ import annotations

import torch

DEFINITION = ("per CFG branch and step k >= 1: mean_abs = mean |f(x_tk,tk) - f(x_tk-1,tk-1)| over the output's "
              "elements; rel_l1 = sum |diff| / sum |f(x_tk-1,tk-1)|; t = t_k (model units)")


def _tensor(output) -> torch.Tensor | None:
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    sample = getattr(output, "sample", None)
    return sample if torch.is_tensor(sample) else None


class OutputChangeProbe:
    """``with OutputChangeProbe(transformer, recorder) as probe: ...generate...``; then ``probe.to_json()``."""

    def __init__(self, transformer: torch.nn.Module, recorder):
        self.transformer = transformer
        self.recorder = recorder
        self._prev: dict[str, torch.Tensor] = {}
        self._rows: dict[str, list[tuple[int, float, torch.Tensor, torch.Tensor]]] = {}
        self._handle = None

    def __enter__(self) -> OutputChangeProbe:
        self._prev, self._rows = {}, {}
        self._handle = self.transformer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._prev = {}

    def _hook(self, module, args, output) -> None:
        out = _tensor(output)
        if out is None:
            return
        calls = self.recorder.calls
        call = calls[-1] if calls else None
        branch, step, t = (call.branch, call.step, call.timestep) if call else ("direct", 0, float("nan"))
        out = out.detach().float()
        prev = self._prev.get(branch)
        if prev is not None and prev.shape == out.shape:
            diff = (out - prev).abs()
            self._rows.setdefault(branch, []).append((step, t, diff.mean(), diff.sum() / prev.abs().sum()))
        self._prev[branch] = out.clone()

    def to_json(self) -> dict:
        branches = {}
        for branch, rows in self._rows.items():
            branches[branch] = {"step": [r[0] for r in rows], "t": [round(r[1], 4) for r in rows],
                                "mean_abs": [float(r[2]) for r in rows], "rel_l1": [float(r[3]) for r in rows]}
        return {"definition": DEFINITION, "branches": branches}
