"""`mt report`: one static HTML page to look at a run's transfers and their metrics.

OUT/report/index.html shows, for every transfer, the reference video, the target image and the
output video side by side (autoplaying, looping, small videos enlarged with crisp pixels) with its
metrics, in a table sortable by any metric and filterable by reference and target; on the first
screen a summary per reference and per target (count, mean motion fidelity and PSNR); per reference
the distribution of motion fidelity; the runs' summaries and the failures with their errors. No CDN,
no server: it opens from the file system.

At scale: the page itself holds the summaries and the table's first page (`page_size` rows, worst
motion fidelity first), so it shows at once however many transfers there are; every transfer is in
OUT/report/data/items.js beside it (columns, strings dictionary-encoded), which the page loads after
it has shown, and then sorts, filters and pages through. Only the current page's rows, and so their
videos, exist in the page. The reference and target are shown as the model saw them (the output's
frame count and size), converted once into OUT/report/media/.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import posixpath
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from mtcore.data.catalog import read_table
from mtcore.errors import InputError
from mtcore.eval.evaluation import SUMMARY_METRICS, latest_rows, load_results, to_records
from mtcore.io.storage import filesystem, local_copy, normalize, storage
from mtcore.io.frames import signed_to_uint8
from mtcore import METRICS_VERSION
from mtcore.io.videoio import probe_video, read_image, read_video, write_mp4


PAGE_FIELDS = ("transfer_key", "reference_id", "target_id", "seed", "model_label", "config_label", *SUMMARY_METRICS,
               "status", "error", "reference", "target")
"""What the page needs of each transfer (the video's path follows from its key)."""
FAILURES_SHOWN = 200
"""Failures listed in the page (all of them are in the catalogs)."""


def write_report(out: str | os.PathLike, run_id: str | None = None, page_size: int = 50) -> Path | str:
    """Write OUT/report/index.html, its data (data/items.js) and media; returns the page's location.

    OUT may be object storage: the videos are read through the storage layer and the page and its
    media are written beside the store, which the page links to relatively.
    """
    out = normalize(out)
    store = storage(out)
    df = load_results(out, METRICS_VERSION, run_id)
    if df.empty:
        raise InputError(out, "no transfers in the catalog" + (f" made by run {run_id}" if run_id else ""))
    # worst motion fidelity first (unmeasured last): the order of the first page and of the data file
    df = df.sort_values("motion_fidelity", ascending=False, na_position="last", kind="stable")
    items = _items(df, store)
    runs = read_table(out, "runs")
    if run_id is not None:
        runs = runs[runs.run_id == run_id]
    failures = _failures(out, df, run_id)
    # every transfer beside the page, when there is more than its first page; its hash names the version
    columns = json.dumps(_columns(items)).encode() if len(items) > page_size else b""
    stamp = hashlib.sha256(columns).hexdigest()[:12]
    data = {"first": items[:page_size], "total": len(items), "items_src": f"data/items.js?v={stamp}",
            "references": sorted(df.reference_id.unique().tolist()), "targets": sorted(df.target_id.unique().tolist()),
            "runs": to_records(runs.sort_values("started_at")), "failures": failures[:FAILURES_SHOWN],
            "failures_total": len(failures), "metrics": list(SUMMARY_METRICS), "page_size": page_size,
            "metrics_version": METRICS_VERSION}
    if columns:
        store.write_bytes("report/data/items.js", b"mtItems(" + columns + b");\n")
    ok = df[df.status == "ok"]
    plots = "\n".join(_strip_plot(ref, group) for ref, group in ok.groupby("reference_id"))
    summaries = _summary(ok, "reference_id", "reference") + _summary(ok, "target_id", "target")
    page = (files("mtcore") / "assets" / "report.html").read_text(encoding="utf-8")
    page = page.replace("/*DATA*/", json.dumps(data).replace("</", "<\\/")).replace("<!--PLOTS-->", plots)
    page = page.replace("<!--SUMMARIES-->", summaries)
    page = page.replace("<!--TITLE-->", html.escape(f"motion-transfer report: {out.rstrip('/').rsplit('/', 1)[-1]}"
                                                    + (f", run {run_id}" if run_id else "")))
    location = store.write_bytes("report/index.html", page.encode("utf-8"))
    return location if store.remote else Path(location)


def _columns(items: list[dict]) -> dict:
    """Records as columns; a string column with repeats as a dictionary and codes (-1 for null)."""
    fields = {}
    for name in (*PAGE_FIELDS, "has_video"):
        values = [item.get(name) for item in items]
        strings = [v for v in values if v is not None]
        if strings and all(isinstance(v, str) for v in strings) and len(set(strings)) < len(strings):
            vocabulary = sorted(set(strings))
            index = {v: i for i, v in enumerate(vocabulary)}
            fields[name] = {"dict": vocabulary, "codes": [-1 if v is None else index[v] for v in values]}
        else:
            fields[name] = {"values": [round(v, 5) if isinstance(v, float) else v for v in values]}
    return {"n": len(items), "fields": fields}


def _summary(ok: pd.DataFrame, column: str, label: str) -> str:
    """A table of count, mean motion fidelity and mean PSNR per reference (or target), worst first."""
    rows = ok.groupby(column).agg(n=("transfer_key", "size"), mf=("motion_fidelity", "mean"),
                                  psnr=("psnr_first", "mean")).sort_values("mf", na_position="last")
    cell = lambda v: "-" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    body = "".join(f"<tr><td>{html.escape(str(name))}</td><td class=num>{r.n}</td><td class=num>{cell(r.mf)}</td>"
                   f"<td class=num>{cell(r.psnr)}</td></tr>" for name, r in rows.iterrows())
    return (f'<div class="summary" id="summary-{label}"><table><tr><th>{label} ({len(rows)})</th><th>videos</th>'
            f"<th>motion fidelity</th><th>PSNR 1st</th></tr>{body}</table></div>")


def _items(df: pd.DataFrame, store) -> list[dict]:
    """One record per transfer: PAGE_FIELDS, media paths relative to the page (OUT/report/), has_video."""
    shapes: dict[tuple, tuple[int, int, int] | None] = {}
    previews: dict[tuple, str | None] = {}
    videos = set(store.files("store/videos"))
    media = set(store.files("report/media"))
    records = []
    for record in to_records(df):
        item = {name: record.get(name) for name in PAGE_FIELDS}
        item["reference"] = item["target"] = None
        item["has_video"] = record["status"] == "ok" and record["video_path"] in videos
        records.append(item)
        if not item["has_video"]:
            continue
        group = (record["embedding_key"], record.get("transfer_config"))
        if group not in shapes:  # every output of an embedding and config shares frame count and size
            with store.reading(record["video_path"]) as path:
                info = probe_video(path)
            shapes[group] = (info.num_frames, info.height, info.width)
        shape = shapes[group]
        for field, kind in (("reference", "video"), ("target", "image")):
            source = record.get(f"{field}_path")
            if (source, shape) not in previews:
                previews[source, shape] = _preview(source, store, media, shape, kind)
            item[field] = previews[source, shape]
    # the page's own first rows carry their video path; the data file derives it from the key
    for item in records:
        item["video"] = f"../store/videos/{item['transfer_key'][:2]}/{item['transfer_key']}.mp4" if item["has_video"] else None
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


def _strip_plot(reference: str, group: pd.DataFrame, width: int = 360, height: int = 56, ticks_max: int = 200) -> str:
    """An inline SVG of motion fidelity on [-1, 1], the mean as a red bar: each output a tick, or past
    `ticks_max` outputs a histogram of 40 bins (its size does not grow with the outputs)."""
    values = group.motion_fidelity.dropna().astype(float).to_numpy()
    x = lambda v: 10 + (v + 1) / 2 * (width - 20)  # noqa: E731
    if len(values) <= ticks_max:
        marks = "".join(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="14" y2="34" class="tick"><title>{v:.3f}</title></line>'
                        for v in values)
    else:
        counts, edges = np.histogram(values, bins=40, range=(-1, 1))
        top = counts.max()
        marks = "".join(f'<rect x="{x(lo):.1f}" y="{34 - 24 * c / top:.1f}" width="{x(hi) - x(lo) - 1:.1f}" '
                        f'height="{24 * c / top:.1f}" class="bar"><title>{lo:.2f} to {hi:.2f}: {c}</title></rect>'
                        for c, lo, hi in zip(counts, edges[:-1], edges[1:]) if c)
    mean = f'<line x1="{x(values.mean()):.1f}" x2="{x(values.mean()):.1f}" y1="8" y2="40" class="mean"/>' if len(values) else ""
    axis = "".join(f'<text x="{x(v):.1f}" y="52" class="ax">{v:g}</text>' for v in (-1, -0.5, 0, 0.5, 1))
    summary = f"mean {values.mean():.3f}, n = {len(values)}" if len(values) else "not measured"
    return (f'<figure class="strip"><figcaption>{html.escape(str(reference))}: {summary}</figcaption>'
            f'<svg width="{width}" height="{height}" role="img" aria-label="motion fidelity of {html.escape(str(reference))}">'
            f'<line x1="10" x2="{width - 10}" y1="24" y2="24" class="axis"/>{marks}{mean}{axis}</svg></figure>')
