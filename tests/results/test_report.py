"""`sencache-bench report`: the page renders in headless Chromium (no console message, every video loads, a non-blank
screenshot), its tables are `table`'s numbers, its trace raster is the records' decisions, and its pieces by hand.

The results are a real tiny run: `match --report` of static and TeaCache at two NFE budgets on two prompts (the
same spec as tests/test_match.py), made once for the module.
"""

from __future__ import annotations

import copy
import csv
import io
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sencache_bench.cli.app import app
from sencache_bench.results.report_media import difference, fit

SPEC = {"model": {"name": "tiny-wan"},
        "sampling": {"steps": 6, "height": 32, "width": 32, "frames": 9, "guidance_scale": 5.0, "seeds": [0]},
        "prompts": ["a red ball bouncing on grass", "a quiet library"], "metrics": ["psnr", "ssim"]}
POLICIES = {"static": {"name": "static", "every": 2},
            "tea": {"name": "teacache", "thresh": 0.2, "coefficients": "configs/calibrated/tiny-wan_teacache.json"}}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A matched results folder and its report, written by `match --report` (4 settings x 2 prompts)."""
    root = tmp_path_factory.mktemp("report")
    specs = []
    for name, policy in POLICIES.items():
        spec = copy.deepcopy(SPEC) | {"policy": policy, "output": {"dir": str(root / "results")}}
        (root / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        specs.append(str(root / f"{name}.yaml"))
    (root / "tune.txt").write_text("a cat walking on a fence\na city street at night\n")
    res = CliRunner().invoke(app, ["match", *specs, "--nfe", "0.5", "--nfe", "0.34", "--tune-prompts",
                                   str(root / "tune.txt"), "--report", "-q"])
    assert res.exit_code == 0, res.output
    assert (root / "results" / "report.html").is_file()
    return root / "results"


# -- headless Chromium ------------------------------------------------------------------------------
def _chromium() -> str:
    """Debian's chromium; installed with apt-get (as root, or through sudo -n) when missing, else the test skips."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get"):
        prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if prefix is not None:
            try:
                subprocess.run([*prefix, "apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                               capture_output=True, timeout=900,
                               env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            except (OSError, subprocess.TimeoutExpired):
                pass
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium, and `apt-get install chromium` did not work here (not root and no sudo -n, or no "
                    "package source)")
    return found


def _headless(page: Path, *args: str, budget: int = 5000) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget}", *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _dom(page: Path, done) -> subprocess.CompletedProcess:
    """``--dump-dom`` once the page is ``done`` (a test on the DOM text): media load in real time while the page's
    clock is virtual, so on a loaded machine a longer virtual budget is tried before giving up."""
    for budget in (5000, 20000, 60000):
        dom = _headless(page, "--dump-dom", budget=budget)
        if done(dom.stdout):
            break
    return dom


def render(page: Path, tmp_path: Path) -> dict:
    """What the page did in Chromium: its console lines, the video status it wrote, and its screenshot's pixels."""
    dom = _dom(page, lambda text: "videos loading" not in text)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    status = re.search(r'<p id="video-status"[^>]*data-loaded="(\d+)" data-failed="(\d+)"', dom.stdout)
    shot = tmp_path / "shot.png"
    _headless(page, "--window-size=1280,1600", f"--screenshot={shot}")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    return {"console": console, "loaded": int(status[1]) if status else None,
            "failed": int(status[2]) if status else None, "videos": dom.stdout.count("<video "), "pixels": pixels}


def test_page_renders_without_console_messages_and_every_video_loads(results, tmp_path):
    page = results / "report.html"
    seen = render(page, tmp_path)
    # 4 (policy, setting) rows x 2 videos (the default --videos) x (reference, cached, difference)
    assert seen["videos"] == 4 * 2 * 3
    assert seen["console"] == []
    assert (seen["loaded"], seen["failed"]) == (24, 0)
    assert seen["pixels"].std() > 20  # text, tables and figures on white: far from a blank page
    # the harness notices what it must: a broken video, a script error, a blank page
    html = page.read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace('src="data:video/webm;base64,', 'src="data:video/webm;base64,AAAA', 1)
                      .replace("</body>", "<script>undefinedFunction();</script></body>"))
    bad = render(broken, tmp_path)
    assert bad["failed"] == 1 and bad["loaded"] == 23
    assert any("undefinedFunction" in line for line in bad["console"])
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert render(blank, tmp_path)["pixels"].std() == 0


#: appended to a copy of the page: once every video has loaded, knock the first group's third video 0.5 s ahead, press
#: the group's play button, and log the three videos' times at each of the leader's timeupdate events
SYNC_PROBE = """<p id="sync-log"></p><script>
(function () {
  var clip = document.querySelector('.clip'), v = clip.querySelectorAll('video'), started = false;
  var all = document.querySelectorAll('video').length, log = document.getElementById('sync-log');
  setInterval(function () {
    if (started || document.getElementById('video-status').getAttribute('data-loaded') !== String(all)) return;
    started = true;
    v[2].currentTime = 0.5;
    clip.querySelector('button').click();
    v[0].addEventListener('timeupdate', function () {
      log.textContent += Array.prototype.map.call(v, function (x) {
        return x.currentTime.toFixed(3) + (x.paused ? 'p' : 'r'); }).join(' ') + ';';
    });
  }, 50);
})();
</script></body>"""


def test_the_play_button_plays_a_group_in_sync(results, tmp_path):
    """While the leader (the reference) plays, the cached video and the difference play at its time: within half a
    frame (the spec's 8 fps), though one of them was 0.5 s ahead when play was pressed."""
    page = tmp_path / "sync.html"
    page.write_text((results / "report.html").read_text().replace("</body>", SYNC_PROBE))
    dom = _dom(page, lambda text: '<p id="sync-log"></p>' not in text).stdout
    log = re.search(r'<p id="sync-log">([^<]*)</p>', dom)[1]
    entries = [[(float(t[:-1]), t[-1]) for t in e.split()] for e in log.split(";") if e]
    duration = 9 / 8  # 9 frames at 8 fps
    playing = [e for e in entries if 0 < e[0][0] < duration - 1e-3]
    assert len(playing) >= 2, log
    for e in playing:
        assert all(state == "r" for _, state in e), log
        assert max(t for t, _ in e) - min(t for t, _ in e) <= 0.5 / 8, log


# -- the tables are `table`'s -----------------------------------------------------------------------
class Tables(HTMLParser):
    """Every <table id=...>: its headers and rows as text, and which cells are <strong>."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict] = {}
        self._table = self._cell = None
        self._bold = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = self.tables.setdefault(attrs["id"], {"headers": [], "rows": [], "bold": set()})
        elif self._table is not None and tag == "tr":
            self._table["rows"].append([])
        elif self._table is not None and tag in ("td", "th"):
            self._cell, self._bold = [], False
        elif tag == "strong":
            self._bold = True

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if self._table is None:
            return
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            if tag == "th":
                self._table["headers"].append(text)
            else:
                row = self._table["rows"][-1]
                if self._bold:
                    self._table["bold"].add((len(self._table["rows"]) - 2, len(row)))
                row.append(text)
            self._cell = None
        elif tag == "table":
            self._table["rows"] = [r for r in self._table["rows"] if r]
            self._table = None


NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e([-+]?\d+))?")


def _close(text: str, value) -> None:
    """A printed number equals the csv's value to the printed precision (half a unit in its last place)."""
    m = NUMBER.fullmatch(text)
    assert m, text
    decimals = len(m[1] or "")
    exponent = int(m[2]) if m[2] else 0
    assert value not in ("", None), f"{text!r} printed for an empty value"
    assert abs(float(text) - float(value)) <= 0.5 * 10.0 ** (exponent - decimals) * 1.0001, (text, value)


def _check_cell(text: str, row: dict, key: str, scale: float = 1.0) -> None:
    """``68.92 [62.81, 75.02] a``, ``1.09x [1.04, 1.14]``, ``50.0%`` or ``-``: each number against its column."""
    text = text.strip()
    if text in ("", "-"):
        assert row[key] in ("", None), (key, text, row[key])
        return
    numbers = [n.group(0) for n in NUMBER.finditer(text)]
    _close(numbers[0], float(row[key]) * scale)
    if "[" in text:
        _close(numbers[1], row[f"{key}_lo"])
        _close(numbers[2], row[f"{key}_hi"])
    letters = re.search(r"\s([a-z]+)$", text)
    if f"{key}_group" in row:
        assert (letters[1] if letters else "") == row[f"{key}_group"], (key, text)


#: per layout: the HTML header -> (csv column, scale); the other headers are labels
NUMERIC = {
    "matched": {"Tuned NFE": ("tuned_nfe", 1), "NFE": ("nfe", 1), "PFLOPs": ("pflops", 1),
                "PFLOPs (no attn)": ("pflops_no_attn", 1), "Speedup [95% CI]": ("speedup", 1),
                "Bound": ("speedup_bound", 1), "LPIPS [95% CI]": ("lpips", 1), "PSNR [95% CI]": ("psnr", 1),
                "SSIM [95% CI]": ("ssim", 1), "Videos": ("videos", 1)},
    "sencache": {"NFE": ("nfe", 1), "Cache %": ("cache", 100), "LPIPS": ("lpips", 1), "PSNR": ("psnr", 1),
                 "SSIM": ("ssim", 1), "Speedup": ("speedup", 1), "Bound": ("speedup_bound", 1)},
    "semcache": {"FLOPs (P)": ("pflops_no_attn", 1), "Speedup": ("speedup", 1), "Bound": ("speedup_bound", 1),
                 "Latency (s)": ("latency_s", 1), "VBench": ("vbench", 100), "LPIPS": ("lpips", 1),
                 "SSIM": ("ssim", 1), "PSNR": ("psnr", 1)},
    "default": {c: (c, 1) for c in ("videos", "nfe", "nfe_effective", "nfe_ref", "speedup", "speedup_bound", "pflops",
                                    "pflops_no_attn", "pflops_ref", "latency_s", "latency_ref_s", "lpips", "ssim",
                                    "psnr", "vbench")},
}
LABELS = {"matched": {"Method": "method"}, "sencache": {"Method": "method"}, "semcache": {"Method": "method"},
          "default": {"policy": "policy", "setting": "setting"}}


@pytest.mark.parametrize("layout", ["matched", "sencache", "semcache", "default"])
def test_tables_equal_the_table_commands_csv(results, layout):
    parser = Tables()
    parser.feed((results / "report.html").read_text())
    table = parser.tables[f"table-{layout}"]
    out = CliRunner().invoke(app, ["table", str(results), "--layout", layout, "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(table["rows"]) == len(rows) > 0
    headers = table["headers"]
    model = None
    for i, (cells, row) in enumerate(zip(table["rows"], rows)):
        cell = dict(zip(headers, cells))
        model = cell.get("Model") or cell.get("model") or model  # the model is printed on a group's first row only
        assert model == row["model"]
        for header, key in LABELS[layout].items():
            assert cell[header] == row[key]
        for header, (key, scale) in NUMERIC[layout].items():
            if header in cell:
                _check_cell(cell[header], row, key, scale)
        if layout == "default":
            near = f"{row['near_threshold']}/{row['decisions']}" if row["decisions"] else ""
            assert cell["near_threshold"] == near.replace(".0", "")
        if "best" in row:  # bold cells: the verdicts' "best" (paper layouts: headers; matched: metric keys)
            bold = {headers[j] for (k, j) in table["bold"] if k == i}
            best = set(filter(None, row["best"].split(";")))
            if layout == "matched":
                best = {h for h in headers if h.split(" ")[0].lower() in best}
            assert bold == best, (i, bold, best)
    assert set(NUMERIC[layout]) & set(headers)  # the comparison compared something


# -- the trace raster is the records' decisions ---------------------------------------------------------
def test_trace_raster_counts_the_records_computed_calls(results):
    """Per (policy, setting): the black cells of its raster are the computed calls of its first videos."""
    from sencache_bench.results.report import TRACE_VIDEOS
    from sencache_bench.results.store import load_records

    html = (results / "report.html").read_text()
    traces = html[html.index('<section id="traces">'):html.index('<section id="provenance">')]
    records, _ = load_records(results)
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["prompt_index"], r["seed"])):
        groups.setdefault((r["policy"], r["setting"]), []).append(r)
    blocks = traces.split("<h3>")[1:]
    assert len(blocks) == len(groups) == 4
    for block in blocks:
        heading = re.match(r"tiny-wan: (\S+) \((.*?)\): NFE", block)
        recs = groups[(heading[1], heading[2].replace("&#x27;", "'"))][:TRACE_VIDEOS]
        computed = sum(c["computed"] for r in recs for c in r["trace"])
        reused = sum(not c["computed"] and c["blocks"] == 0 for r in recs for c in r["trace"])
        assert block.count('fill="rgb(0,0,0)"') == computed
        assert block.count('fill="rgb(255,255,255)"') == reused
        assert 0 < reused  # every one of these settings skips some calls


# -- pieces by hand --------------------------------------------------------------------------------
def test_fit_and_difference_by_hand():
    frames = np.arange(2 * 2 * 4 * 3, dtype=np.uint8).reshape(2, 2, 4, 3)
    up = fit(frames, max_side=256, min_side=6)  # shorter side 2 -> x3 (whole pixels)
    assert up.shape == (2, 6, 12, 3) and (up[:, :3, :3] == frames[:, :1, :1]).all()
    assert (up[1, 5, 11] == frames[1, 1, 3]).all()
    big = np.zeros((60, 300, 500, 3), np.uint8)
    big[:, :, 250:] = 200
    small = fit(big, max_side=256, max_frames=49)  # k = ceil(500 / 256) = 2: box means of 2 x 2
    assert small.shape == (49, 150, 250, 3) and small[0, 0, 124, 0] == 0 and small[0, 0, 125, 0] == 200
    odd = fit(np.zeros((1, 41, 41, 3), np.uint8), max_side=256, min_side=100)  # x3 = 123 -> cropped to even 122
    assert odd.shape == (1, 122, 122, 3)
    a = np.array([[[[10, 200, 0]]]], np.uint8)
    b = np.array([[[[13, 100, 0]]]], np.uint8)
    assert difference(a, b, gain=4).tolist() == [[[[12, 255, 0]]]]  # 4 x 3; 4 x 100 clipped; 0


def test_cli_refusals_are_one_line(tmp_path, results):
    for args, words in ((["report", str(tmp_path / "nowhere")], "not found"),
                        (["report", str(results), "--videos", "-1", "--out", str(tmp_path / "r.html")], "--videos")):
        proc = subprocess.run([sys.executable, "-m", "sencache_bench", *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
        assert proc.returncode != 0 and words in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_run_report_flag_without_matched_records(tiny_spec, tmp_path):
    """`run --report` on a plain run: no matched table, the paper layouts, one synced group of three videos."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(policy={"name": "static", "every": 2}, prompts=["a quiet library"],
                                             sampling={**SPEC["sampling"], "steps": 4})))
    res = CliRunner().invoke(app, ["run", str(spec), "--report", "-q"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "results" / "report.html").read_text()
    assert 'id="table-matched"' not in html and 'id="table-sencache"' in html and 'id="table-semcache"' in html
    assert html.count('<div class="clip"') == 1 and html.count("<video ") == 3
    assert html.count('src="data:video/webm;base64,') == 3 and html.count('src="data:image/png;base64,') == 2
