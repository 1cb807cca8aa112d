"""Open an HTML report in headless Chromium and measure how its SVG plots rendered.

A script injected into a copy of the report (the report itself has no JavaScript) measures every
``svg.plot`` in the laid-out page (size, marks with a non-empty bounding box) and rasterizes it on a
canvas, counting inked and coloured pixels. Chromium prints the resulting DOM (``--dump-dom``)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")
CHECK = """<script>
async function rasterCheck(svg) {
  const r = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('path.series, circle.point, rect.bar')];
  const drawn = marks.filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; }).length;
  const img = new Image();
  const xml = new XMLSerializer().serializeToString(svg);
  img.src = 'data:image/svg+xml;base64,' + btoa(unescape(encodeURIComponent(xml)));
  await img.decode();
  const c = document.createElement('canvas');
  c.width = Math.round(r.width); c.height = Math.round(r.height);
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0, c.width, c.height);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  let ink = 0, colored = 0;
  for (let i = 0; i < px.length; i += 4) {
    const R = px[i], G = px[i + 1], B = px[i + 2];
    if (R < 240 || G < 240 || B < 240) ink++;
    if (Math.max(R, G, B) - Math.min(R, G, B) > 60) colored++;
  }
  return {label: svg.getAttribute('aria-label'), width: r.width, height: r.height, marks: marks.length,
          drawn: drawn, ink: ink, colored: colored};
}
window.addEventListener('load', async () => {
  const pre = document.createElement('pre');
  pre.id = 'render-check';
  try {
    pre.textContent = JSON.stringify(await Promise.all([...document.querySelectorAll('svg.plot')].map(rasterCheck)));
  } catch (e) { pre.textContent = 'ERROR ' + e; }
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium is not installed (apt-get install -y chromium; scripts/setup.sh installs it)")
    raise AssertionError  # unreachable


def render_check(report: Path, workdir: Path) -> list[dict]:
    """Per plot: label, width, height, marks, drawn (marks with a non-empty bbox), ink and colored pixels."""
    page = workdir / f"checked-{report.name}"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    proc = subprocess.run([chromium(), *FLAGS, "--virtual-time-budget=10000", "--window-size=1400,2400",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r'<pre id="render-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no render check in Chromium's DOM (rc {proc.returncode}): {proc.stderr[-2000:]}"
    text = html.unescape(m.group(1))
    assert not text.startswith("ERROR"), text
    return json.loads(text)


def screenshot(report: Path, png: Path) -> Path:
    subprocess.run([chromium(), *FLAGS, "--hide-scrollbars", "--window-size=1400,2400", f"--screenshot={png}",
                    report.as_uri()], capture_output=True, timeout=120, check=True)
    return png
