"""The runner end to end on tiny-wan: references shared and reused, `none` identical, records complete, resume."""

from __future__ import annotations

import json

import pytest

from sencache_bench.results.store import load_records
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve


def test_none_then_static_share_references(tiny_spec, tmp_path):
    spec = resolve(tiny_spec())
    runner = Runner(spec)
    paths = [runner.run_item(p, s) for p, s in runner.items()]
    refs = sorted((tmp_path / "results" / "references").glob("*.npz"))
    assert len(refs) == 2
    stamps = [r.stat().st_mtime_ns for r in refs]
    for path in paths:
        rec = json.loads(path.read_text())
        assert rec["identical_to_reference"] and rec["metrics"] == {"psnr": 100.0, "ssim": 1.0}
        assert rec["nfe_per_branch"] == {"cond": 6, "uncond": 6} == rec["reference"]["nfe_per_branch"]
        assert rec["nfe"] == rec["reference"]["nfe"] == 6
        assert rec["flops"]["total"] == rec["reference"]["flops"]["total"] > rec["flops"]["total_no_attn"] > 0
        assert set(rec["latency"]) == {"total_s", "encode_s", "denoise_s", "decode_s", "statistic"}
        assert rec["latency"]["total_s"] > 0 and rec["peak_memory_mb"] > 0
        timing = rec["timing"]  # one policy sample, bracketed by two uncached baselines timed beside it
        assert len(timing["policy_s"]) == 1 and len(timing["baseline_s"]) == 2
        assert rec["latency"]["total_s"] == timing["policy_s"][0]
        assert timing["speedup"] == pytest.approx(sum(timing["baseline_s"]) / 2 / timing["policy_s"][0])
        assert timing["reference_reproduced"] is True  # CPU: the re-timed baseline is the reference bit for bit
        assert rec["baseline"]["latency_s"] == pytest.approx(sum(timing["baseline_s"]) / 2)
        assert len(rec["trace"]) == 12 and rec["versions"]["diffusers"] and rec["spec_hash"]
        assert (tmp_path / "results" / "runs" / "none-default").is_dir() and rec["video"].endswith(".mp4")

    static = Runner(resolve(tiny_spec(policy={"name": "static", "every": 2})))
    rec = json.loads(static.run_item(*static.items()[0]).read_text())
    assert [r.stat().st_mtime_ns for r in refs] == stamps, "references must be reused, not regenerated"
    assert rec["nfe_per_branch"] == {"cond": 3, "uncond": 3} and rec["nfe"] == 3
    assert rec["flops"]["transformer"] < rec["reference"]["flops"]["transformer"]
    assert rec["metrics"]["psnr"] < 100.0
    records, problems = load_records(tmp_path / "results")
    assert len(records) == 3 and not problems


def test_resume_skips_finished_items_and_bad_records_are_reported(tiny_spec, tmp_path):
    spec = resolve(tiny_spec(prompts=["a quiet library"]))
    runner = Runner(spec)
    assert len(runner.pending()) == 1
    path = runner.run_item(*runner.items()[0])
    assert runner.pending() == []
    assert len(Runner(spec, force=True).pending()) == 1
    (path.parent / "broken.json").write_text("{not json")
    old = json.loads(path.read_text())
    old["schema_version"] = 0
    (path.parent / "old.json").write_text(json.dumps(old))
    records, problems = load_records(tmp_path / "results")
    assert len(records) == 1
    assert any("broken.json: unreadable" in p for p in problems)
    assert any("old.json: schema version 0" in p for p in problems)


def test_flops_are_counted_once_per_call_shape(tiny_spec, tmp_path, monkeypatch):
    from sencache_bench.runner import Session

    counted = []
    original = Session.count_flops
    monkeypatch.setattr(Session, "count_flops", lambda self, *a: counted.append(a) or original(self, *a))
    Runner(resolve(tiny_spec())).run_items(Runner(resolve(tiny_spec())).items())
    static = Runner(resolve(tiny_spec(policy={"name": "static", "every": 2})))
    static.run_items(static.items())
    assert len(counted) == 1  # two prompts, two policies, two runners: one count
    assert len(list((tmp_path / "results" / "flops").glob("*.json"))) == 3  # the parts + each policy's decisions
    other = Runner(resolve(tiny_spec(sampling={**tiny_spec()["sampling"], "steps": 3})))
    assert other.flops_key() != static.flops_key()


@pytest.mark.parametrize("model", ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo"])
def test_flop_parts_do_not_depend_on_the_prompt(model, tiny_spec):
    """Why one count per shape is enough: the text encoders pad to a fixed length (second method: count both)."""
    from sencache_bench.runner import Session

    session = Session(resolve(tiny_spec(model={"name": model}, sampling={})))
    assert session.count_flops("a red ball", 0) == session.count_flops("a quiet library with tall shelves", 3)


def test_flop_split_per_part_equals_each_part_counted_alone(tiny_spec):
    """The text-encoder and VAE FLOPs the runner files by module equal each part counted on its own
    (the prompt pair CFG encodes, and one decode of latents of this sampling's shape)."""
    import torch

    from sencache_bench.measure.flops import count_flops
    from sencache_bench.runner import Session

    spec = resolve(tiny_spec(prompts=["a quiet library"]))
    session = Session(spec)
    parts = session.count_flops("a quiet library", 0)
    pipe = session.pipe
    with torch.no_grad():
        length = spec.call_kwargs()["max_sequence_length"]  # tiny-wan's registered text length (16)
        text = count_flops(lambda: pipe.encode_prompt("a quiet library", negative_prompt=None,
                                                      do_classifier_free_guidance=True, device="cpu",
                                                      max_sequence_length=length))
        s = spec.sampling
        latents = torch.zeros(1, pipe.vae.config.z_dim, (s.frames - 1) // pipe.vae_scale_factor_temporal + 1,
                              s.height // pipe.vae_scale_factor_spatial, s.width // pipe.vae_scale_factor_spatial)
        vae = count_flops(lambda: pipe.vae.decode(latents))
    assert parts["text_encoder"] == [text.total, text.attention] and text.total > 0
    assert parts["vae_decode"] == [vae.total, vae.attention] and vae.total > 0
    assert parts["text_encoder"] != parts["vae_decode"]


def test_reference_key_changes_with_what_changes_the_reference(tiny_spec):
    """Shift, guidance, negative prompt, dtype (and steps, size, seed, prompt, model) make a new reference;
    the policy, the metrics, the seed list around a seed and the fps (mp4 only) do not."""
    def key(**sections):
        runner = Runner(resolve(tiny_spec(**{"prompts": ["a quiet library"], **sections})))
        return runner.reference_key(runner.spec.prompts[0], 0)

    base = key()
    sampling = dict(tiny_spec()["sampling"])
    changed = {
        "shift": key(sampling={**sampling, "shift": 3.0}),
        "guidance": key(sampling={**sampling, "guidance_scale": 4.0}),
        "negative prompt": key(sampling={**sampling, "negative_prompt": "blurry"}),
        "dtype": key(model={"name": "tiny-wan", "dtype": "bfloat16"}),
        "steps": key(sampling={**sampling, "steps": 5}),
        "size": key(sampling={**sampling, "height": 48}),
        "text length": key(sampling={**sampling, "text_length": 8}),
        "prompt": key(prompts=["a quiet library at night"]),
    }
    assert all(k != base for k in changed.values()), changed
    assert len(set(changed.values())) == len(changed)
    same = [key(policy={"name": "static", "every": 2}), key(metrics=["psnr"]),
            key(sampling={**sampling, "seeds": [0, 1]}), key(sampling={**sampling, "fps": 12}),
            key(output={"dir": "elsewhere"})]
    assert same == [base] * len(same)


def test_an_untimed_run_generates_once_per_item_and_records_the_same_figures(tiny_spec, tmp_path, monkeypatch):
    """``timing.timed: false``: the references, then one policy generation per item (no warm-ups, no baselines);
    its records hold the NFE, FLOPs, trace decisions and fidelity of a timed run of the same spec, and no speedup."""
    from sencache_bench import api
    from sencache_bench.runner import Session

    static = {"name": "static", "every": 2}
    timed = [json.loads(p.read_text()) for p in Runner(resolve(tiny_spec(policy=static))).run_items(
        Runner(resolve(tiny_spec(policy=static))).items())]
    calls = []
    real = Session.generate
    monkeypatch.setattr(Session, "generate", lambda self, *a, **k: calls.append(k.get("policy")) or real(self, *a, **k))
    untimed_spec = tiny_spec(policy=static, timing={"timed": False}, output={"dir": str(tmp_path / "untimed")})
    runner = Runner(resolve(untimed_spec))
    untimed = [json.loads(p.read_text()) for p in runner.run_items(runner.items())]
    assert len(calls) == 2 * len(untimed) == 4  # two references (a fresh folder), then one generation per item
    assert [c is None for c in calls] == [True, True, False, False]
    for a, b in zip(timed, untimed, strict=True):
        for key in ("nfe", "nfe_per_branch", "flops", "metrics"):
            assert a[key] == b[key], key
        assert [c["computed"] for c in a["trace"]] == [c["computed"] for c in b["trace"]]
        assert b["timing"]["timed"] is False and b["timing"]["speedup"] is None
        assert b["baseline"] == {"latency_s": None, "phases": {}} and b["latency"]["total_s"] > 0
    rows = api.table(tmp_path / "untimed")
    assert len(rows) == 1 and rows[0]["speedup"] is None and rows[0]["nfe"] == 3
    assert api.table(tmp_path / "untimed", layout="overhead")  # its uncached row: no baseline latency to average


@pytest.mark.parametrize("every, baselines", [(1, 3), (2, 2)])
def test_the_session_counts_generations_by_purpose(tiny_spec, every, baselines):
    """``Session.spent``: two items (fresh folder, static every=2, no re-timing at tolerance 1.0) cost, by the
    schedule of docs/timing.md: one 2-step session warm-up, two references, one 1-step FLOP-parts count, one
    1-step decision count, one policy warm-up, two policy runs and, with ``baseline_every`` k, B_0 plus one
    closing baseline per segment: 3 at k = 1 (B0 P0 B1 P1 B2), 2 at k = 2 (B0 P0 P1 B1)."""
    timing = {"baseline_every": every, "tolerance": 1.0}
    runner = Runner(resolve(tiny_spec(policy={"name": "static", "every": 2}, timing=timing)))
    paths = runner.run_items(runner.items())
    spent = runner.session.spent
    counts = {purpose: (n, steps) for purpose, (n, _, steps) in spent.items()}
    assert counts == {"session warm-up": (1, 2), "reference": (2, 12), "FLOP parts": (1, 1),
                      "decision FLOPs": (1, 1), "policy warm-up": (1, 6), "policy run": (2, 12),
                      "baseline": (baselines, 6 * baselines)}
    # the ledger times the pipeline call, inside the record's timed generation: never more than the samples
    samples = {s for p in paths for s in json.loads(p.read_text())["timing"]["baseline_s"]}
    assert len(samples) == baselines and 0.5 * sum(samples) < spent["baseline"][1] <= sum(samples)
    assert runner.session.spent_line().startswith(f"generations: {8 + baselines} in ")
