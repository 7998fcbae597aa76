"""Per-expert calibration files: one file, one section per expert (Wan 2.2's two transformers).

A model with several experts (``transformer`` for high noise, ``transformer_2`` below the boundary) is
calibrated per expert: each expert's indicator/output pairs, residual ratios or sensitivities are measured
on the calls that expert ran, never paired across the switch (issue 24, "Caching across two experts").
The file keeps the usual header (kind, policy, model, family, sampling...) and, instead of the
single-transformer payload, ``experts: {name: {expert: name, <payload>}}``. A loader asks for its expert's
view with :func:`expert_view`: the header merged with that expert's section, so the single-transformer
reader works on it unchanged. A section is never used for another expert, a per-expert file never on a
single-transformer model, a single-transformer file never on an expert: one ValueError line each.
"""

from __future__ import annotations

from pathlib import Path


def per_expert_file(header: dict, sections: dict[str, dict]) -> dict:
    """The file's JSON: ``header`` plus ``experts`` (each section records its expert's name)."""
    return {**header, "experts": {name: {"expert": name, **section} for name, section in sections.items()}}


def expert_view(data: dict, expert: str | None, where: str | Path, what: str, policy: str,
                single_model: bool = False) -> dict:
    """The part of a calibrated file for ``expert`` (None: a single-transformer model, or not known yet).

    ``single_model``: the caller knows the model has one transformer (a per-expert file is then refused
    even without an expert name)."""
    sections = data.get("experts")
    fix = f"calibrate this model with `sencache-bench calibrate SPEC.yaml --policy {policy}`"
    if sections is None:
        if expert is not None:
            raise ValueError(f"{where} holds {what} made for a single transformer ({data.get('model')}), not for "
                             f"the expert {expert!r} of a model with several experts: {fix}")
        return data
    if not isinstance(sections, dict) or not sections:
        raise ValueError(f"{where}: 'experts' must map expert names to their {what}: {fix}")
    if expert is None:
        if single_model:
            raise ValueError(f"{where} holds {what} per expert ({', '.join(sections)}) of {data.get('model')}; this "
                             f"model has one transformer: {fix}")
        expert = next(iter(sections))  # validation before attach: the first expert's section is checked
    section = sections.get(expert)
    if not isinstance(section, dict) or section.get("expert", expert) != expert:
        raise ValueError(f"{where} holds {what} made for the expert(s) {', '.join(sections)} of "
                         f"{data.get('model')}, not for {expert!r}: {fix}")
    header = {k: v for k, v in data.items() if k != "experts"}
    return {**header, **section}


def expert_names(runner) -> list[str | None]:
    """The loaded pipeline's experts by name; ``[None]`` for a single-transformer model."""
    experts = runner.session.recorder.experts
    return [None] if len(experts) == 1 else [str(e[0]) for e in experts]
