"""`mt report`: one static HTML page to look at a run's transfers and their metrics.

OUT/report/index.html shows, for every transfer, the reference video, the target image and the
output video side by side (autoplaying, looping, small videos enlarged with crisp pixels) with its
metrics, in a table sortable by any metric and filterable by reference and target; per reference a
strip plot of motion fidelity; the runs' summaries and every failure with its error. Everything is
inline (no CDN, no server): it opens from the file system. The table is paged (`page_size` rows):
only the current page's rows, and so their videos, exist in the page, so 2,000 transfers load as
fast as 50. The reference and target are shown as the model saw them (the output's frame count and
size), converted once into OUT/report/media/.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import posixpath
from pathlib import Path

import pandas as pd

from mtcore.catalog import read_table
from mtcore.errors import InputError
from mtcore.evaluation import SUMMARY_METRICS, latest_rows, load_results, to_records
from mtcore.storage import filesystem, local_copy, normalize, storage
from mtcore.frames import signed_to_uint8
from mtcore import METRICS_VERSION
from mtcore.videoio import probe_video, read_image, read_video, write_mp4


def write_report(out: str | os.PathLike, run_id: str | None = None, page_size: int = 50) -> Path | str:
    """Write OUT/report/index.html (and its media); returns the page's location (a path or a URL).

    OUT may be object storage: the videos are read through the storage layer and the page and its
    media are written beside the store, which the page links to relatively.
    """
    out = normalize(out)
    store = storage(out)
    df = load_results(out, METRICS_VERSION, run_id)
    if df.empty:
        raise InputError(out, "no transfers in the catalog" + (f" made by run {run_id}" if run_id else ""))
    items = _items(df, store)
    runs = read_table(out, "runs")
    if run_id is not None:
        runs = runs[runs.run_id == run_id]
    data = {"items": items, "runs": to_records(runs.sort_values("started_at")), "failures": _failures(out, df, run_id),
            "metrics": list(SUMMARY_METRICS), "page_size": page_size, "metrics_version": METRICS_VERSION}
    plots = "\n".join(_strip_plot(ref, group) for ref, group in df[df.status == "ok"].groupby("reference_id"))
    page = _PAGE.replace("/*DATA*/", json.dumps(data).replace("</", "<\\/")).replace("<!--PLOTS-->", plots)
    page = page.replace("<!--TITLE-->", html.escape(f"motion-transfer report: {out.rstrip('/').rsplit('/', 1)[-1]}"
                                                    + (f", run {run_id}" if run_id else "")))
    location = store.write_bytes("report/index.html", page.encode("utf-8"))
    return location if store.remote else Path(location)


def _items(df: pd.DataFrame, store) -> list[dict]:
    """One record per transfer: ids, metrics, and media paths relative to the page (OUT/report/)."""
    shapes: dict[tuple, tuple[int, int, int] | None] = {}
    records = to_records(df)
    videos = set(store.files("store/videos"))
    media = set(store.files("report/media"))
    for record in records:
        record["video"] = record["reference"] = record["target"] = None
        if record["status"] != "ok" or record["video_path"] not in videos:
            continue
        group = (record["embedding_key"], record.get("transfer_config"))
        if group not in shapes:  # every output of an embedding and config shares frame count and size
            with store.reading(record["video_path"]) as path:
                info = probe_video(path)
            shapes[group] = (info.num_frames, info.height, info.width)
        f, h, w = shapes[group]
        record["video"] = posixpath.relpath(record["video_path"], "report")
        record["reference"] = _preview(record.get("reference_path"), store, media, (f, h, w), "video")
        record["target"] = _preview(record.get("target_path"), store, media, (f, h, w), "image")
    return records


def _preview(path: str | None, store, media: set[str], shape: tuple[int, int, int], kind: str) -> str | None:
    """The reference (mp4) or target (png) as the model saw it, written once to OUT/report/media; None if
    unreadable. Named by the input's location, size and modification time and the shape."""
    if not isinstance(path, str):
        return None
    f, h, w = shape
    fs, inner = filesystem(path)
    try:
        info = fs.info(inner)
    except (OSError, ValueError):
        return None
    stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
    tag = hashlib.sha256(f"{path}|{info.get('size')}|{stamp}|{f}x{h}x{w}".encode()).hexdigest()[:20]
    rel = "report/media/" + (f"ref-{tag}.mp4" if kind == "video" else f"target-{tag}.png")
    if rel not in media:
        try:
            with local_copy(path) as local, store.writing(rel) as tmp:
                if kind == "video":
                    write_mp4(signed_to_uint8(read_video(local, f, h, w)), tmp, fps=7)
                else:
                    read_image(local, h, w).save(tmp, format="PNG")
        except (InputError, RuntimeError, OSError):
            return None
        media.add(rel)
    return posixpath.relpath(rel, "report")


def _failures(out: str, df: pd.DataFrame, run_id: str | None) -> list[dict]:
    """Failed inversions and transfers (their latest row is a failure), with their errors."""
    failed = []
    embeddings = read_table(out, "embeddings")
    if run_id is not None:
        embeddings = embeddings[embeddings.run_id == run_id]
    for row in latest_rows(embeddings, "embedding_key").itertuples():
        if row.status == "failed":
            failed.append({"kind": "inversion", "what": row.reference_id, "error": row.error})
    for row in df[df.status == "failed"].itertuples():
        failed.append({"kind": "transfer", "what": f"{row.reference_id} -> {row.target_id} (seed {row.seed})",
                       "error": row.error})
    return failed


def _strip_plot(reference: str, group: pd.DataFrame, width: int = 360, height: int = 56) -> str:
    """An inline SVG: each output's motion fidelity as a tick on [-1, 1], the mean as a bar."""
    values = group.motion_fidelity.dropna().astype(float).to_numpy()
    x = lambda v: 10 + (v + 1) / 2 * (width - 20)  # noqa: E731
    ticks = "".join(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="14" y2="34" class="tick"><title>{v:.3f}</title></line>'
                    for v in values)
    mean = f'<line x1="{x(values.mean()):.1f}" x2="{x(values.mean()):.1f}" y1="8" y2="40" class="mean"/>' if len(values) else ""
    axis = "".join(f'<text x="{x(v):.1f}" y="52" class="ax">{v:g}</text>' for v in (-1, -0.5, 0, 0.5, 1))
    summary = f"mean {values.mean():.3f}, n = {len(values)}" if len(values) else "not measured"
    return (f'<figure class="strip"><figcaption>{html.escape(str(reference))}: {summary}</figcaption>'
            f'<svg width="{width}" height="{height}" role="img" aria-label="motion fidelity of {html.escape(str(reference))}">'
            f'<line x1="10" x2="{width - 10}" y1="24" y2="24" class="axis"/>{ticks}{mean}{axis}</svg></figure>')


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title><!--TITLE--></title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}
th.sortable{cursor:pointer;user-select:none;white-space:nowrap}th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
video,img.media{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;background:#eee}
.num{text-align:right;font-variant-numeric:tabular-nums}.err{color:#b00}.none{color:#999}
.strip{display:inline-block;margin:0 1.5em 1em 0}.strip figcaption{font-size:.9em}
.axis{stroke:#999}.tick{stroke:#2563eb;stroke-width:2;opacity:.6}.mean{stroke:#dc2626;stroke-width:3}.ax{font-size:10px;text-anchor:middle;fill:#666}
#pager button{margin:0 .3em}
</style></head><body>
<h1><!--TITLE--></h1>
<h2>Runs</h2><div id="runs"></div>
<h2>Motion fidelity per reference</h2><div id="plots"><!--PLOTS--></div>
<h2>Transfers</h2>
<p>Reference <select id="f-ref"><option value="">all</option></select>
 target <select id="f-tgt"><option value="">all</option></select>
 <span id="count"></span></p>
<p id="pager"></p>
<table id="transfers"><thead></thead><tbody></tbody></table>
<h2>Failures</h2><div id="failures"></div>
<script type="application/json" id="data">/*DATA*/</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const labels = {motion_fidelity: "motion fidelity", psnr_first: "PSNR 1st (dB)", ssim_first: "SSIM 1st",
  clip_first: "CLIP-1st", clip_avg: "CLIP-avg", warp_error: "warp error", frame_change: "frame change"};
const cols = [["reference_id", "reference"], ["target_id", "target"], ["seed", "seed"], ["model_label", "model"],
  ["config_label", "config"], ...data.metrics.map(m => [m, labels[m] || m]), ["status", "status"]];
let sortKey = "motion_fidelity", sortDir = -1, page = 0;
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const fmt = v => v === null || v === undefined ? '<span class="none">-</span>' : (typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(3)) : esc(v));
function media(item) {
  const vid = src => src ? `<video src="${esc(src)}" muted autoplay loop playsinline></video>` : '<span class="none">n/a</span>';
  const img = src => src ? `<img class="media" src="${esc(src)}" alt="target">` : '<span class="none">n/a</span>';
  return `<td>${vid(item.reference)}</td><td>${img(item.target)}</td><td>${vid(item.video)}</td>`;
}
function filtered() {
  const r = document.getElementById("f-ref").value, t = document.getElementById("f-tgt").value;
  const rows = data.items.filter(i => (!r || i.reference_id === r) && (!t || i.target_id === t));
  rows.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    if (x === y) return 0; if (x === null || x === undefined) return 1; if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * sortDir;
  });
  return rows;
}
function render() {
  const rows = filtered(), size = data.page_size, pages = Math.max(1, Math.ceil(rows.length / size));
  page = Math.min(page, pages - 1);
  document.getElementById("count").textContent = `${rows.length} of ${data.items.length} transfers`;
  const head = cols.map(([k, l]) => `<th class="sortable${k === sortKey ? (sortDir > 0 ? " sorted-asc" : " sorted-desc") : ""}" data-key="${k}">${esc(l)}</th>`).join("");
  document.querySelector("#transfers thead").innerHTML = `<tr><th>reference video</th><th>target image</th><th>output video</th>${head}</tr>`;
  document.querySelector("#transfers tbody").innerHTML = rows.slice(page * size, (page + 1) * size).map(i =>
    `<tr>${media(i)}${cols.map(([k]) => `<td class="${typeof i[k] === "number" ? "num" : ""}${k === "status" && i.status !== "ok" ? " err" : ""}" title="${k === "status" && i.error ? esc(i.error) : ""}">${fmt(i[k])}</td>`).join("")}</tr>`).join("");
  document.querySelectorAll("#transfers th.sortable").forEach(th => th.onclick = () => {
    sortDir = th.dataset.key === sortKey ? -sortDir : -1; sortKey = th.dataset.key; render(); });
  const pager = document.getElementById("pager");
  pager.innerHTML = pages > 1 ? `page <button id="prev">&lt;</button> ${page + 1} / ${pages} <button id="next">&gt;</button>` : "";
  if (pages > 1) {
    document.getElementById("prev").onclick = () => { page = Math.max(0, page - 1); render(); };
    document.getElementById("next").onclick = () => { page = Math.min(pages - 1, page + 1); render(); };
  }
}
function table(rows, keys) {
  if (!rows.length) return '<p class="none">none</p>';
  return `<table><tr>${keys.map(k => `<th>${esc(k)}</th>`).join("")}</tr>${rows.map(r => `<tr>${keys.map(k => `<td class="${k === "error" ? "err" : ""}">${fmt(r[k])}</td>`).join("")}</tr>`).join("")}</table>`;
}
for (const [id, key] of [["f-ref", "reference_id"], ["f-tgt", "target_id"]]) {
  const select = document.getElementById(id);
  [...new Set(data.items.map(i => i[key]))].sort().forEach(v => select.add(new Option(v, v)));
  select.onchange = () => { page = 0; render(); };
}
document.getElementById("runs").innerHTML = table(data.runs, ["run_id", "started_at", "finished_at", "inversions_computed",
  "inversions_cached", "transfers_computed", "transfers_cached", "metrics_computed", "failed"]);
document.getElementById("failures").innerHTML = table(data.failures, ["kind", "what", "error"]);
render();
</script></body></html>
"""
