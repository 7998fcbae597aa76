"""The HTML of the report: tables from the very rich Tables ``sencache-bench table`` prints, the page around them,
and the one script that keeps each group of videos playing in sync.

A table is converted from the rich Table the layouts render (results/tables.py ``render_cells``), not rebuilt: its
headers, cells, bold cells (the verdicts), section breaks, title and notes are the terminal table's, cell for cell.
"""

from __future__ import annotations

from html import escape


def _text(cell) -> tuple[str, bool]:
    """(plain text, bold) of one rich cell: a Text (the layouts' cells) or a plain header string."""
    from rich.text import Text

    if isinstance(cell, Text):
        return cell.plain, "bold" in str(cell.style) or any("bold" in str(s.style) for s in cell.spans)
    return str(cell), False


def rich_table_html(table, table_id: str) -> str:
    """A rich Table as an HTML <table>: one <th> per column, <strong> for a bold cell, a ``break`` class on the rows
    that start a section, the title as <caption> and the notes under it."""
    cols = table.columns
    head = "".join(f'<th class="{"l" if c.justify == "left" else "r"}">{escape(_text(c.header)[0])}</th>'
                   for c in cols)
    body = []
    cells = [list(c.cells) for c in cols]
    for i in range(table.row_count):
        tds = []
        for j, c in enumerate(cols):
            text, bold = _text(cells[j][i])
            inner = f"<strong>{escape(text)}</strong>" if bold and text else escape(text)
            tds.append(f'<td class="{"l" if c.justify == "left" else "r"}">{inner}</td>')
        start = ' class="break"' if i > 0 and table.rows[i - 1].end_section else ""
        body.append(f'<tr{start}>{"".join(tds)}</tr>')
    caption = f"<caption>{escape(str(table.title))}</caption>" if table.title else ""
    notes = ""
    if table.caption:
        notes = '<div class="notes">' + "".join(f"<p>{escape(line)}</p>" for line in str(table.caption).splitlines()
                                              if line.strip()) + "</div>"
    return (f'<div class="table-wrap"><table id="{escape(table_id)}" class="results">{caption}<thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>{notes}')


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-bottom: .3em; }
nav a { margin-right: 1em; }
summary h3 { display: inline; }
.table-wrap { overflow-x: auto; }
table.results { border-collapse: collapse; font-size: 13px; margin: .4em 0; }
table.results caption { text-align: left; font-weight: bold; padding: .3em 0; }
table.results th, table.results td { padding: 2px 8px; border-bottom: 1px solid #eee; white-space: nowrap; }
table.results th { border-bottom: 2px solid #888; background: #f6f6f6; }
table.results tr.break td { border-top: 2px solid #888; }
.l { text-align: left; } .r { text-align: right; font-variant-numeric: tabular-nums; }
.notes p { margin: .2em 0; font-size: 12px; color: #555; max-width: 1200px; }
img.figure { max-width: 100%; border: 1px solid #eee; }
.clips { display: flex; flex-wrap: wrap; gap: 1.2em; }
.clip { border: 1px solid #ddd; padding: .5em; border-radius: 4px; }
.clip .row { display: flex; gap: 6px; }
.clip figure { margin: 0; text-align: center; font-size: 12px; }
.clip video { display: block; image-rendering: pixelated; background: #000; }
.clip .meta { font-size: 12px; color: #555; max-width: 520px; }
svg.trace { font: 10px monospace; display: block; margin-bottom: .8em; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 12px; }
#video-status { font-size: 12px; color: #555; }
"""

#: Each .clip holds videos that play together: the first is the leader; every frame (and on each of its timeupdate
#: events, which fire where animation frames do not) the others are pulled to its time when they drift by more than
#: half a frame. One button plays or pauses the group, a slider seeks it. When every
#: video has fired loadeddata (or one failed) #video-status says so (what the test reads).
SCRIPT = """
(function () {
  var clips = document.querySelectorAll('.clip');
  var all = document.querySelectorAll('.clip video');
  var loaded = 0, failed = [];
  var status = document.getElementById('video-status');
  function report() {
    if (!status) return;
    status.textContent = failed.length ? 'videos failed: ' + failed.join(', ')
      : (loaded === all.length ? 'videos loaded: ' : 'videos loading: ') + loaded + '/' + all.length;
    status.setAttribute('data-loaded', String(loaded));
    status.setAttribute('data-failed', String(failed.length));
  }
  all.forEach(function (v) {
    if (v.readyState >= 2) { loaded++; } else {
      v.addEventListener('loadeddata', function () { loaded++; report(); }, { once: true });
    }
    v.addEventListener('error', function () { failed.push(v.getAttribute('data-name') || '?'); report(); });
  });
  report();
  clips.forEach(function (clip) {
    var vids = Array.prototype.slice.call(clip.querySelectorAll('video'));
    var lead = vids[0], button = clip.querySelector('button'), seek = clip.querySelector('input[type=range]');
    if (!lead) return;
    var half = 0.5 / (parseFloat(clip.getAttribute('data-fps')) || 8);
    function follow() {
      vids.slice(1).forEach(function (v) {
        if (Math.abs(v.currentTime - lead.currentTime) > half) v.currentTime = lead.currentTime;
        if (lead.paused !== v.paused) { if (lead.paused) v.pause(); else v.play().catch(function () {}); }
      });
      if (seek && lead.duration) seek.value = String(lead.currentTime / lead.duration);
    }
    function tick() { follow(); if (!lead.paused) requestAnimationFrame(tick); }
    lead.addEventListener('play', function () { requestAnimationFrame(tick); });
    ['pause', 'seeked', 'timeupdate'].forEach(function (e) { lead.addEventListener(e, follow); });
    if (button) button.addEventListener('click', function () {
      if (lead.paused) { lead.play().catch(function () {}); button.textContent = 'pause'; }
      else { lead.pause(); button.textContent = 'play'; }
    });
    if (seek) seek.addEventListener('input', function () {
      if (lead.duration) { lead.currentTime = parseFloat(seek.value) * lead.duration; follow(); }
    });
  });
})();
"""


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: (id, heading, HTML) per section, a contents line, the style and the sync script inline."""
    nav = "".join(f'<a href="#{sid}">{escape(heading)}</a>' for sid, heading, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{escape(heading)}</h2>{html}</section>' for sid, heading, html in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><h1>{escape(title)}</h1><nav>{nav}</nav>{body}<script>{SCRIPT}</script></body></html>\n')
