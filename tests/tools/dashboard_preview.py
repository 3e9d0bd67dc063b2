"""A picture of the Grafana dashboard over a demo run, where no Grafana can run (docs/dashboard-preview.png).

No Debian, PyPI or npm package ships a Grafana server, so this renders the dashboard's own JSON
(deploy/grafana/dashboards/dossier-gateway.json) itself: every panel at its grid position, every query sent to
a real Prometheus (Debian's) that scraped `gateway demo --serve` every second with deploy/alerts.yml loaded,
time series drawn with uPlot (the chart library Grafana's time-series panel is built on), stat panels with the
dashboard's thresholds and value mappings, then a screenshot by headless Chromium (Debian's `chromium`).
It is a preview of the same queries over the same data, not Grafana's rendering. Early on, the portal
simulator is put in outage for 40 s, so the circuit, retries, paused partitions and lag have something to show.

    python -m tests.tools.dashboard_preview [--dossiers 2000] [--out docs/dashboard-preview.png]

Not part of `make test` (it runs about two minutes); needs node with `npm ci --prefix tests/tools`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.test_prometheus_scrape import prometheus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dossier-gateway.json"
UPLOT = ROOT / "tests" / "tools" / "node_modules" / "uplot" / "dist"
ROW_PX = 30
OUTAGE_AT_S, OUTAGE_S = 15, 40  # the portal is down from 15 s into the demo, for 40 s
WIDTH_PX = 1800


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def _expr(expr: str, seconds: int) -> str:
    variables = {"$__rate_interval": "15s", "$__range": f"{seconds}s", "$adapter": ".*", "$agency": ".*"}
    for name, value in variables.items():
        expr = expr.replace(name, value)
    return expr


def _legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text if template else ",".join(f"{k}={v}" for k, v in labels.items()) or "value"


def _panel_data(base: str, panel: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """The panel's series from Prometheus: a range for time series, the value at `end` for stat panels."""
    seconds = max(1, int(end - start))
    series: list[dict[str, Any]] = []
    for target in panel["targets"]:
        expr = _expr(target["expr"], seconds)
        if panel["type"] == "stat":
            answer = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": end}))
            for item in answer["data"]["result"]:
                value = float(item["value"][1])
                series.append({"name": _legend(target.get("legendFormat", ""), item["metric"]),
                               "value": value if math.isfinite(value) else None})
        else:
            params = {"query": expr, "start": start, "end": end, "step": 2}
            answer = _get(f"{base}/api/v1/query_range?" + urllib.parse.urlencode(params))
            for item in answer["data"]["result"]:
                # NaN (0/0 while a partner has no traffic) and ±Inf are gaps, as Grafana draws them.
                points = {int(float(t)): float(v) for t, v in item["values"] if math.isfinite(float(v))}
                if any(points.values()):  # series at zero all along are left out of the picture (and legend)
                    series.append({"name": _legend(target.get("legendFormat", ""), item["metric"]), "points": points})
    return {"type": panel["type"], "title": panel["title"], "gridPos": panel["gridPos"], "series": series,
            "unit": panel["fieldConfig"]["defaults"].get("unit", "short"),
            "thresholds": panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", []),
            "mappings": panel["fieldConfig"]["defaults"].get("mappings", [])}


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>{css}
body {{ background:#111217; color:#ccccdc; font:13px sans-serif; margin:0; padding:12px; width:{width}px; }}
h1 {{ font-size:18px; margin:0 0 2px 0; color:#fff; }} .note {{ color:#8e8e9a; margin-bottom:10px; }}
.grid {{ position:relative; }} .panel {{ position:absolute; background:#181b1f; border:1px solid #2c3235;
  border-radius:3px; box-sizing:border-box; padding:4px 6px; overflow:hidden; }}
.panel h2 {{ font-size:12px; margin:0 0 2px 0; color:#d8d9da; font-weight:600; }}
.row {{ position:absolute; font-size:15px; color:#fff; font-weight:600; padding-top:6px; }}
.stats {{ display:flex; gap:6px; height:calc(100% - 22px); }}
.stat {{ flex:1; display:flex; flex-direction:column; justify-content:center; align-items:center; border-radius:3px;
  color:#fff; }} .stat .v {{ font-size:34px; font-weight:600; }} .stat .n {{ font-size:12px; opacity:.9; }}
.u-legend {{ font-size:10px; color:#ccccdc; }} .u-legend .u-marker {{ width:8px; height:8px; }}
</style><script>{js}</script></head><body>
<h1>{title}</h1><div class="note">{note}</div><div class="grid" id="grid"></div>
<script>const PANELS = {panels}; const ROW = {row}; const UNIT = {unit};
const COLOURS = ["#73bf69","#f2cc0c","#8ab8ff","#ff780a","#f2495c","#5794f2","#b877d9","#fade2a","#37872d",
  "#c4162a","#1f60c4","#8f3bb8"];
function fmt(v, unit) {{
  if (v === null || v === undefined || isNaN(v)) return "–";
  if (unit === "percentunit") return (v * 100).toFixed(1) + " %";
  if (unit === "s") return v >= 1 ? v.toFixed(2) + " s" : (v * 1000).toFixed(0) + " ms";
  const k = Math.abs(v) >= 1e4 ? (v / 1e3).toFixed(0) + "k" : Math.abs(v) >= 100 ? v.toFixed(0) : +v.toFixed(2) + "";
  return unit === "reqps" || unit === "ops" ? k + "/s" : k;
}}
function colourOf(v, steps) {{
  let c = "#37872d";
  for (const s of steps) if (s.value === null || v >= s.value) c = {{green:"#37872d",orange:"#ff9830",
    red:"#c4162a"}}[s.color] || s.color;
  return c;
}}
function mapped(v, mappings) {{
  for (const m of mappings) if (m.type === "value" && m.options[String(v)]) return m.options[String(v)].text;
  return null;
}}
const grid = document.getElementById("grid");
let bottom = 0;
for (const p of PANELS) {{
  const g = p.gridPos, x = g.x * UNIT, y = g.y * ROW, w = g.w * UNIT - 6, h = g.h * ROW - 6;
  bottom = Math.max(bottom, y + h + 10);
  if (p.type === "row") {{ const r = document.createElement("div"); r.className = "row"; r.style.left = x + "px";
    r.style.top = y + "px"; r.textContent = p.title; grid.appendChild(r); continue; }}
  const el = document.createElement("div"); el.className = "panel"; Object.assign(el.style, {{left: x + "px",
    top: y + "px", width: w + "px", height: h + "px"}}); el.innerHTML = "<h2></h2>";
  el.firstChild.textContent = p.title; grid.appendChild(el);
  if (p.type === "stat") {{
    const box = document.createElement("div"); box.className = "stats"; el.appendChild(box);
    for (const s of (p.series.length ? p.series : [{{name: "no data", value: null}}])) {{
      const t = s.value === null ? null : mapped(s.value, p.mappings);
      const st = document.createElement("div"); st.className = "stat";
      st.style.background = s.value === null ? "#2c3235" : colourOf(s.value, p.thresholds);
      st.innerHTML = "<div class=v></div><div class=n></div>";
      st.firstChild.textContent = t || fmt(s.value, p.unit); st.lastChild.textContent = s.name; box.appendChild(st);
    }}
    continue;
  }}
  const times = [...new Set(p.series.flatMap(s => Object.keys(s.points).map(Number)))].sort((a, b) => a - b);
  const data = [times, ...p.series.map(s => times.map(t => t in s.points ? s.points[t] : null))];
  const series = [{{}}, ...p.series.map((s, i) => ({{label: s.name, stroke: COLOURS[i % COLOURS.length], width: 1.5,
    value: (u, v) => fmt(v, p.unit)}}))];
  if (!p.series.length) {{
    const n = document.createElement("div"); n.textContent = "No data";
    n.style.cssText = "color:#8e8e9a;text-align:center;margin-top:" + (h / 2 - 30) + "px";
    el.appendChild(n); continue;
  }}
  const legendRows = Math.min(4, Math.ceil(p.series.length / 3));
  new uPlot({{width: w - 12, height: h - 30 - legendRows * 16, series, legend: {{show: true, live: false}},
    axes: [{{stroke: "#8e8e9a", grid: {{stroke: "#2c3235"}}}}, {{stroke: "#8e8e9a", grid: {{stroke: "#2c3235"}},
      values: (u, vals) => vals.map(v => fmt(v, p.unit)), size: 70}}],
    cursor: {{show: false}}, scales: {{x: {{time: true}}}}}},
    times.length ? data : [[], ...p.series.map(() => [])], el);
}}
grid.style.height = bottom + "px";
</script></body></html>"""


def render(panels: list[dict[str, Any]], title: str, note: str, out_html: Path) -> int:
    """Write the page; returns its height in pixels."""
    unit = (WIDTH_PX - 4) // 24
    page = _PAGE.format(
        css=(UPLOT / "uPlot.min.css").read_text(), js=(UPLOT / "uPlot.iife.min.js").read_text(), width=WIDTH_PX,
        title=title, note=note, panels=json.dumps(panels), row=ROW_PX, unit=unit,
    )
    out_html.write_text(page, encoding="utf-8")
    return max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) * ROW_PX + 90


def run(dossiers: int, out: Path) -> None:
    if not UPLOT.is_dir():
        sys.exit("uplot is missing: npm ci --prefix tests/tools")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is missing: apt-get install -y chromium")
    work = Path(tempfile.mkdtemp(prefix="dashboard-preview-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    gateway = Path(sys.executable).parent / "gateway"
    demo_log = (work / "demo.log").open("wb")
    demo = subprocess.Popen(
        [str(gateway), "demo", "--dossiers", str(dossiers), "--serve", "--portal-latency-ms", "40",
         "--portal-error-rate", "0.03"],
        stdout=subprocess.PIPE, stderr=demo_log, env=env, cwd=work,
    )
    try:
        assert demo.stdout is not None
        info = json.loads(demo.stdout.readline())
        target = info["metrics_url"].removeprefix("http://").removesuffix("/metrics")
        with prometheus(work, target) as base:
            start = time.time()
            time.sleep(OUTAGE_AT_S)
            portal = info["simulators"]["national_portal"]
            _post(f"{portal}/_sim/knobs", {"outage": True})
            time.sleep(OUTAGE_S)
            _post(f"{portal}/_sim/knobs", {"outage": False})
            for _ in range(240):  # the demo prints its summary once every dossier converged
                if b"Demo summary" in (work / "demo.log").read_bytes():
                    break
                time.sleep(1)
            time.sleep(20)  # the tail: lag back to 0, rates falling
            end = time.time()
            document = json.loads(DASHBOARD.read_text())
            panels = []
            for panel in document["panels"]:
                if panel["type"] == "row":
                    panels.append({"type": "row", "title": panel["title"], "gridPos": panel["gridPos"]})
                else:
                    panels.append(_panel_data(base, panel, start, end))
            firing = [a["labels"]["alertname"] for a in _get(f"{base}/api/v1/alerts")["data"]["alerts"]
                      if a["state"] == "firing"]
        minutes = (end - start) / 60
        note = (f"Preview of {DASHBOARD.relative_to(ROOT)} over `gateway demo --dossiers {dossiers}` "
                f"({minutes:.1f} min, the portal in outage for {OUTAGE_S} s from {OUTAGE_AT_S} s): every panel's "
                "query answered by a real Prometheus, drawn with uPlot (series at zero all along left out) — not "
                f"Grafana, which cannot run here. Alerts firing at the end: {', '.join(sorted(set(firing))) or 'none'}."
                )
        html = work / "dashboard.html"
        height = render(panels, document["title"], note, html)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={WIDTH_PX + 24},{height}", f"--screenshot={out.resolve()}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
        print(f"{out} ({minutes:.1f} min of demo; firing: {', '.join(sorted(set(firing))) or 'none'})")
    finally:
        demo.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(timeout=30)
        if demo.poll() is None:
            demo.kill()
        demo_log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dossiers", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-preview.png")
    args = parser.parse_args()
    run(args.dossiers, args.out)


if __name__ == "__main__":
    main()
