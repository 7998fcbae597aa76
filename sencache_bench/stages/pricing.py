"""Stage 4, pricing: the FLOPs of a generation from its call trace (or a counted replay), and its NFE.

The pipeline's parts (text encoding, one transformer call split into block stack and the rest, VAE
decoding) are counted once per call shape under the FLOP counter and kept in ``flops/<key>.json``; a call
trace is then priced call by call (skipped blocks cost nothing), plus what the policy spends deciding.
Policies that skip work inside the blocks, where the trace cannot see it, are priced by a counted replay.
"""

from __future__ import annotations

from pathlib import Path

from .. import parallel
from ..measure.flops import CallCost
from ..results.store import read_json, write_json
from ..spec import ResolvedSpec, sampling_dict
from .resolve import short_hash, slug


def price(flops: dict, calls: list) -> dict:
    """FLOPs of one generation, in both conventions: with attention ("total") and without ("no_attn")."""
    cost = CallCost.from_dict(flops["call"])
    transformer = [0, 0]
    computed = [0, 0, 0]  # FLOPs (total, attention) and count of the computed calls
    for c in calls:
        tot, att = cost.price(c.forward_ran, c.blocks_ran, getattr(c, "tokens", None))
        transformer[0] += tot
        transformer[1] += att
        if c.computed:
            computed[0], computed[1], computed[2] = computed[0] + tot, computed[1] + att, computed[2] + 1
    decision = flops.get("decision")  # what the policy spends deciding, on every call
    if decision:
        transformer = [transformer[0] + decision[0] * len(calls), transformer[1] + decision[1] * len(calls)]
    parts = {"text_encoder": flops["text_encoder"], "transformer": transformer, "vae_decode": flops["vae_decode"]}
    return priced(parts, full=cost.full, computed=tuple(computed))


def priced(parts: dict, full: tuple[int, int] | None, computed: tuple[int, int, int]) -> dict:
    out = {}
    for name, (tot, att) in parts.items():
        out[name] = tot
        out[f"{name}_no_attn"] = tot - att
    out["total"] = sum(tot for tot, _ in parts.values())
    out["total_no_attn"] = sum(tot - att for tot, att in parts.values())
    if full is not None:
        out["per_call_full"], out["per_call_full_no_attn"] = full[0], full[0] - full[1]
    n = max(1, computed[2])  # mean over computed calls: below per_call_full when a policy dropped tokens
    out["per_computed_call"], out["per_computed_call_no_attn"] = computed[0] // n, (computed[0] - computed[1]) // n
    return out


def nfe_summary(calls: list) -> dict:
    per_branch: dict[str, int] = {}
    calls_per_branch: dict[str, int] = {}
    effective: dict[str, float] = {}  # computed calls weighted by their share of computed tokens
    for c in calls:
        per_branch[c.branch] = per_branch.get(c.branch, 0) + int(c.computed)
        calls_per_branch[c.branch] = calls_per_branch.get(c.branch, 0) + 1
        effective[c.branch] = effective.get(c.branch, 0.0) + (getattr(c, "token_fraction", 1.0) if c.computed else 0.0)
    mean = sum(per_branch.values()) / max(1, len(per_branch))
    out = {"nfe_per_branch": per_branch, "calls_per_branch": calls_per_branch,
           "nfe_total": sum(per_branch.values()), "nfe": mean,
           "nfe_effective_per_branch": {b: round(v, 6) for b, v in effective.items()},
           "nfe_effective": round(sum(effective.values()) / max(1, len(effective)), 6)}
    experts = sorted({c.expert for c in calls if getattr(c, "expert", None) is not None})
    if experts:  # a model with several experts: the same counts per expert ("nfe" stays the total per branch)
        out["nfe_per_expert"] = {e: {b: sum(int(c.computed) for c in calls if c.expert == e and c.branch == b)
                                     for b in per_branch} for e in experts}
        out["calls_per_expert"] = {e: {b: sum(1 for c in calls if c.expert == e and c.branch == b)
                                       for b in per_branch} for e in experts}
    return out


def price_per_expert(flops: dict, calls: list) -> dict | None:
    """Transformer FLOPs (both conventions) of each expert's calls; None on a single-transformer model."""
    experts = sorted({c.expert for c in calls if getattr(c, "expert", None) is not None})
    if not experts:
        return None
    out = {}
    for e in experts:
        priced = price(flops, [c for c in calls if c.expert == e])
        out[e] = {"transformer": priced["transformer"], "transformer_no_attn": priced["transformer_no_attn"]}
    return out


def per_expert_flops(parts: dict, calls: list) -> dict:
    per_expert = price_per_expert(parts, calls)
    return {} if per_expert is None else {"flops_per_expert": per_expert}


def flops_key(spec: ResolvedSpec, layout=None) -> str:
    """What the FLOPs of a call depend on: model, sampling (not seeds, fps) and the pipeline's call arguments."""
    s = sampling_dict(spec.sampling)
    for k in ("seeds", "fps", "negative_prompt"):
        s.pop(k)
    return short_hash({"model": spec.model_identity(), "sampling": s, **parallel.key(layout),
                       "call": {k: v for k, v in spec.call_kwargs().items() if k != "negative_prompt"}})


class FlopBook:
    """The counted FLOP parts of one spec, in memory and under ``flops/`` for later runs."""

    def __init__(self, spec: ResolvedSpec, log, layout=None):
        self.spec, self.log, self.layout = spec, log, layout
        self.dir = spec.output_dir / "flops"
        self._counts: dict[str, object] = {}

    def parts(self, session, prompt, seed: int) -> dict:
        """The pipeline's FLOP parts, counted once per call shape."""
        key = flops_key(self.spec, self.layout)
        if key in self._counts:
            return self._counts[key]
        path = self.dir / f"{key}.json"
        parts = self._read(path, "parts")
        if parts is None:
            parts = session.count_flops(prompt.text, seed)
            sampling = {k: v for k, v in sampling_dict(self.spec.sampling).items() if k != "seeds"}
            write_json(path, {"key": key, "model": self.spec.model_name, "sampling": sampling,
                              "counted_with": {"prompt": prompt.text, "seed": seed, "steps": 1}, "parts": parts})
        self._counts[key] = parts
        return parts

    def decision(self, session, prompt, seed: int) -> list[int]:
        """The policy's per-call decision FLOPs, counted once per call shape and setting."""
        policy = self.spec.policy
        key = f"{flops_key(self.spec, self.layout)}-{slug(f'{policy.name}-{policy.setting()}')}"
        if key not in self._counts:
            path = self.dir / f"{key}.json"
            self._counts[key] = self._read(path, "decision")
            if self._counts[key] is None:
                parts = self.parts(session, prompt, seed)
                self._counts[key] = session.decision_flops(prompt.text, seed, policy, parts["call"])
                write_json(path, {"key": key, "policy": policy.name, "setting": policy.setting(),
                                  "decision": self._counts[key], "per": "transformer call"})
        return self._counts[key]

    def _read(self, path: Path, field: str):
        """A FLOP count kept in ``flops/``; a damaged file is counted again (with one warning line)."""
        if not path.exists():
            return None
        try:
            return read_json(path)[field]
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.log(f"warning: FLOP count {path} is damaged ({type(err).__name__}): counting it again")
            return None


def reference_flops(parts: dict, calls: list) -> dict:
    """The reference's pricing fields: its NFE, the FLOP parts, their price along its trace, per expert."""
    return {**nfe_summary(calls), "flops_parts": parts, "flops": price(parts, calls),
            **per_expert_flops(parts, calls)}


def run_flops(book: FlopBook, session, prompt, seed: int, ref_parts: dict, calls: list) -> dict:
    """A policy run's pricing fields: NFE, FLOPs, how they were found (``trace`` or ``replay``), per expert.

    A policy that ran calls on fewer tokens counts those calls itself (``price_parts``)."""
    policy = book.spec.policy
    if policy.priced_by_replay():  # work skipped inside the blocks: count what the generation executes
        return {**nfe_summary(calls), "flops": session.count_generation(prompt.text, seed, policy),
                "flops_method": "replay"}
    parts = {**ref_parts, "decision": book.decision(session, prompt, seed)}
    if hasattr(policy, "price_parts"):
        parts = policy.price_parts(session, parts, calls)
    return {**nfe_summary(calls), "flops": price(parts, calls), "flops_method": "trace",
            **per_expert_flops(parts, calls)}
