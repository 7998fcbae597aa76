"""A spec file that is not UTF-8: one line, exit 2, nothing written; saved as UTF-8 it runs as usual."""

from __future__ import annotations


def test_spec_not_utf8_then_fixed(bench, monkeypatch):
    monkeypatch.chdir(bench.tmp)
    spec = bench.spec()
    text = spec.read_text(encoding="utf-8").replace("a quiet library", "a quiet caf\xe9")
    spec.write_bytes(text.encode("cp1252"))  # what a Windows editor may save
    at = text.encode("utf-8").index("caf\xe9".encode()) + 3
    before = bench.files(bench.tmp)

    out = bench.cli("run", spec)
    assert out.code == 2
    assert out.err == [f"error: {spec}: not UTF-8 text (byte {at}): save the spec as UTF-8 YAML"]
    assert bench.files(bench.tmp) == before

    spec.write_text(text, encoding="utf-8")
    assert bench.cli("run", spec, "-q").code == 0
    assert bench.table(bench.tmp / "results") == bench.undisturbed((), prompts=[
        "a red ball bouncing on grass", "a quiet caf\xe9", "a dog running on a beach"])
