"""A row's speedup from its records' paired timings: geometric mean, interval, physical bound, plausibility.

Each record carries its own ratio ``timing.speedup`` = mean of the two uncached baselines timed around it /
the median of its policy samples (:mod:`sencache_bench.measure.timing`). Over a row's items:

- ``speedup``: the geometric mean of the steady items' ratios (ratios multiply; a 2x and a 0.5x item
  average to 1x). Items whose bracketing baselines disagreed even after re-timing (``steady: false``) are
  left out and counted in the note; a row with no steady item has no speedup (note and warning say why).
- ``speedup_lo`` / ``speedup_hi``: a 95% percentile bootstrap over items of that geometric mean (seeded); a
  single item gets the range its two baselines span.
- ``speedup_bound``: Amdahl's bound from the baseline's own phase split: text encoding and VAE decoding do
  not shrink, the denoising phase shrinks at best with the transformer's FLOPs,
  ``T_base / (T_encode + T_decode + T_denoise * F_policy / F_uncached)``, geometric mean over items.
- ``note``: ``noisy`` when the interval lies wholly above the bound, or, for ``none``, misses 1.0; the run
  and table commands also print a warning line for such rows. The unsteady count and ``noisy`` describe the
  machine's timing noise; ``N baseline(s) differ from the stored reference`` does not (an uncached baseline
  that is not the stored reference bit for bit): :func:`untimed_note` keeps that part, for comparing two runs.
"""

from __future__ import annotations

import math
import re
from statistics import fmean

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95


def geomean(values: list[float]) -> float:
    return math.exp(fmean(math.log(v) for v in values))


def python_random(seed: int) -> np.random.RandomState:
    """A numpy generator whose ``random_sample`` stream is ``random.Random(seed).random()``'s: both are MT19937
    seeded by ``init_by_array`` with the seed's 32-bit words (little-endian), and both make a double from two
    draws (genrand_res53), so ``floor(draw * n)`` gives the very resamples ``random.choices`` made."""
    key, words = abs(seed), []
    while key:
        key, word = divmod(key, 1 << 32)
        words.append(word)
    return np.random.RandomState(words or [0])  # a list: numpy seeds a list (not an int) with init_by_array


def bootstrap_geomean(values: list[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                      level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the geometric mean over items (resampled with replacement): the
    resamples of ``random.Random(seed).choices(logs, k=n)``, ``samples`` times, vectorised."""
    logs = np.array([math.log(v) for v in values])
    n = logs.size
    rng, means = python_random(seed), np.empty(samples)
    rows = max(1, (1 << 22) // n)  # resamples per chunk: the same stream, drawn in bounded memory
    for start in range(0, samples, rows):
        count = min(rows, samples - start)
        index = np.floor(rng.random_sample((count, n)) * n).astype(np.intp)
        means[start:start + count] = logs[index].mean(axis=1)
    means.sort()
    lo = means[int(math.floor((1 - level) / 2 * (samples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (samples - 1)))]
    return math.exp(lo), math.exp(hi)


def amdahl_bound(record: dict) -> float | None:
    """The most this item's policy could gain: only the denoising phase shrinks, at best with the FLOPs."""
    phases = (record.get("baseline") or {}).get("phases") or {}
    ref_flops = record["reference"]["flops"].get("transformer")
    flops = record["flops"].get("transformer")
    if not phases.get("total_s") or not ref_flops or flops is None:
        return None
    fixed = phases["total_s"] - phases["denoise_s"]
    return phases["total_s"] / (fixed + phases["denoise_s"] * flops / ref_flops)


def summarize(records: list[dict]) -> dict:
    """speedup, speedup_lo, speedup_hi, speedup_bound, latency_s, latency_ref_s and note of one table row."""
    timed = [r for r in records if (r.get("timing") or {}).get("speedup")]
    if not timed:
        return {"speedup": None, "speedup_lo": None, "speedup_hi": None, "speedup_bound": None,
                "latency_s": None, "latency_ref_s": None, "note": ""}
    steady = [r for r in timed if r["timing"].get("steady", True)]
    notes = []
    if not steady:  # every item's baselines disagreed: no figure is better than a disturbed one
        return {"speedup": None, "speedup_lo": None, "speedup_hi": None, "speedup_bound": None,
                "latency_s": None, "latency_ref_s": None, "note": f"all {len(timed)} unsteady: no speedup"}
    if len(steady) < len(timed):
        notes.append(f"{len(timed) - len(steady)} of {len(timed)} unsteady, left out")
    ratios = [r["timing"]["speedup"] for r in steady]
    if len(ratios) > 1:
        lo, hi = bootstrap_geomean(ratios)
    else:
        t = steady[0]["timing"]
        lat = steady[0]["latency"]["total_s"]
        lo, hi = min(t["baseline_s"]) / lat, max(t["baseline_s"]) / lat
    bounds = [b for b in (amdahl_bound(r) for r in steady) if b]
    bound = geomean(bounds) if bounds else None
    speedup = geomean(ratios)
    none_row = all(r.get("policy") == "none" for r in records)
    if (bound is not None and lo > bound) or (none_row and not lo <= 1.0 <= hi):
        notes.insert(0, "noisy")
    not_reproduced = sum(r["timing"].get("reference_reproduced") is False for r in timed)
    if not_reproduced:
        notes.append(f"{not_reproduced} baseline(s) differ from the stored reference")
    return {"speedup": speedup, "speedup_lo": lo, "speedup_hi": hi, "speedup_bound": bound,
            "latency_s": fmean(r["latency"]["total_s"] for r in steady),
            "latency_ref_s": fmean(r["baseline"]["latency_s"] for r in steady),
            "note": NOTE_SEP.join(notes)}


NOTE_SEP = "; "
# the parts of a note that depend on timing noise (summarize writes exactly these forms)
TIMING_NOTE = re.compile(r"noisy|all \d+ unsteady(: no speedup)?|\d+ of \d+ unsteady, left out")


def untimed_note(note: str | None) -> str:
    """A row's note without its timing-only parts: what two runs of the same spec must agree on (a rerun after an
    interrupt, a sweep point run alone), while the unsteady counts and ``noisy`` vary with the machine's load."""
    return NOTE_SEP.join(p for p in (note or "").split(NOTE_SEP) if p and not TIMING_NOTE.fullmatch(p))


def warnings(rows: list[dict]) -> list[str]:
    """One line per row whose speedup is implausible or whose baselines did not reproduce the reference."""
    out = []
    for r in rows:
        note = r.get("note") or ""
        if "no speedup" in note:
            out.append(f"{r['model']} / {r['policy']} {r['setting']}: {note} (timing disturbed: rerun with --force "
                       f"on a quiet machine, or raise timing.retries)")
        elif "noisy" in note or "differ from the stored reference" in note:
            bound = f", bound {r['speedup_bound']:.2f}x" if r.get("speedup_bound") else ""
            out.append(f"{r['model']} / {r['policy']} {r['setting']}: speedup {r['speedup']:.2f}x "
                       f"[{r['speedup_lo']:.2f}, {r['speedup_hi']:.2f}]{bound}: {note} (timing disturbed: rerun "
                       f"with --force on a quiet machine, or raise timing.repeats)")
    return out
