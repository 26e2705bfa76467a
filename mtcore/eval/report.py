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
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np

from mtcore.data.catalog import read_table
from mtcore.errors import InputError
from mtcore.eval.evaluation import SUMMARY_METRICS, to_records
from mtcore.io.storage import filesystem, local_copy, normalize, storage
from mtcore.io.frames import signed_to_uint8
from mtcore import METRICS_VERSION
from mtcore.io.videoio import probe_video, read_image, read_video, write_mp4


PAGE_FIELDS = ("transfer_key", "reference_id", "target_id", "seed", "model_label", "config_label", *SUMMARY_METRICS,
               "status", "error", "reference", "target")
"""What the page needs of each transfer (the video's path follows from its key)."""
FAILURES_SHOWN = 200
"""Failures listed in the page (all of them are in the catalogs)."""


ROWS_PER_BATCH = 20_000
"""Transfers turned into page records at a time: the report's memory does not grow with the run."""
DICTIONARY_FIELDS = ("reference_id", "target_id", "model_label", "config_label", "status", "error", "reference", "target")
"""Fields of the data file written as a dictionary and codes (they repeat); the others as values."""


def write_report(out: str | os.PathLike, run_id: str | None = None, page_size: int = 50) -> Path | str:
    """Write OUT/report/index.html, its data (data/items.js) and media; returns the page's location.

    OUT may be object storage: the videos are read through the storage layer and the page and its
    media are written beside the store, which the page links to relatively. The catalogs are read by
    DuckDB (mtcore.eval.results_sql) and the transfers turned into records ROWS_PER_BATCH at a time, each
    field streamed to a file of its own, so that memory stays bounded at any number of transfers
    (benchmarks/bench_report.py --memory).
    """
    from mtcore.eval.results_sql import query_results

    out = normalize(out)
    store = storage(out)
    return query_results(out, METRICS_VERSION, run_id, lambda con: _write(con, out, store, run_id, page_size))


def _write(con, out: str, store, run_id: str | None, page_size: int) -> Path | str:
    total = con.execute("SELECT count(*) FROM results").fetchone()[0]
    if not total:
        raise InputError(out, "no transfers in the catalog" + (f" made by run {run_id}" if run_id else ""))
    runs = read_table(out, "runs")
    if run_id is not None:
        runs = runs[runs.run_id == run_id]
    failures, failures_total = _failures(con, run_id)
    distinct = lambda column: [r[0] for r in con.execute(  # noqa: E731
        f"SELECT DISTINCT {column} FROM results WHERE {column} IS NOT NULL ORDER BY {column}").fetchall()]
    # highest motion fidelity first (unmeasured last): the order of the first page and of the data file
    rows = con.sql(f"""SELECT transfer_key, embedding_key, video_path, reference_path, target_path, transfer_config,
                           {', '.join(f for f in PAGE_FIELDS if f not in ("transfer_key", "reference", "target"))}
                           FROM results ORDER BY motion_fidelity DESC NULLS LAST, status = 'ok', created_at, transfer_key
                           """).to_arrow_reader(ROWS_PER_BATCH)
    first: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mt-report-") as scratch:
        columns = _ColumnFiles(Path(scratch), (*PAGE_FIELDS, "has_video"))
        items = _Items(store)
        for batch in rows:
            for item in items.records(batch.to_pylist()):
                columns.add(item)
                if len(first) < page_size:
                    first.append(item)
        # every transfer beside the page, when there is more than its first page; its hash names the version
        if total > page_size:
            with store.writing("report/data/items.js") as tmp:
                stamp = columns.write(tmp)
        else:
            stamp = hashlib.sha256(b"").hexdigest()[:12]
        columns.close()
    data = {"first": first, "total": total, "items_src": f"data/items.js?v={stamp}",
            "references": distinct("reference_id"), "targets": distinct("target_id"),
            "runs": to_records(runs.sort_values("started_at")), "failures": failures,
            "failures_total": failures_total, "metrics": list(SUMMARY_METRICS), "page_size": page_size,
            "metrics_version": METRICS_VERSION}
    plots = _strip_plots(con)
    summaries = _summary(con, "reference_id", "reference") + _summary(con, "target_id", "target")
    page = (files("mtcore") / "assets" / "report.html").read_text(encoding="utf-8")
    page = page.replace("/*DATA*/", json.dumps(data).replace("</", "<\\/")).replace("<!--PLOTS-->", plots)
    page = page.replace("<!--SUMMARIES-->", summaries)
    page = page.replace("<!--TITLE-->", html.escape(f"motion-transfer report: {out.rstrip('/').rsplit('/', 1)[-1]}"
                                                    + (f", run {run_id}" if run_id else "")))
    location = store.write_bytes("report/index.html", page.encode("utf-8"))
    return location if store.remote else Path(location)


class _ColumnFiles:
    """The data file's columns, each streamed to a file of its own as records come, then joined into
    `mtItems({"n": N, "fields": {name: {"dict": [...], "codes": [...]} or {"values": [...]}}})`."""

    def __init__(self, folder: Path, names: tuple[str, ...]):
        self.names, self.n = names, 0
        self.files = {name: open(folder / name, "w+", encoding="utf-8") for name in names}
        self.vocabulary: dict[str, dict[str, int]] = {name: {} for name in names if name in DICTIONARY_FIELDS}

    def add(self, item: dict) -> None:
        sep = "," if self.n else ""
        for name, f in self.files.items():
            value = item.get(name)
            if name in self.vocabulary:
                value = -1 if value is None else self.vocabulary[name].setdefault(value, len(self.vocabulary[name]))
            elif isinstance(value, float):
                value = round(value, 5)
            f.write(sep + json.dumps(value))
        self.n += 1

    def write(self, path: str | Path) -> str:
        """Write the data file to `path`; the first 12 hex digits of its sha256."""
        digest = hashlib.sha256()
        with open(path, "wb") as target:
            def put(text: str) -> None:
                data = text.encode("utf-8")
                digest.update(data)
                target.write(data)
            put(f'mtItems({{"n": {self.n}, "fields": {{')
            for i, name in enumerate(self.names):
                kind = "codes" if name in self.vocabulary else "values"
                head = f'"dict": {json.dumps(list(self.vocabulary[name]))}, ' if name in self.vocabulary else ""
                put(("," if i else "") + f'{json.dumps(name)}: {{{head}"{kind}": [')
                f = self.files[name]
                f.seek(0)
                while chunk := f.read(1 << 20):
                    put(chunk)
                put("]}")
            put("}});\n")
        return digest.hexdigest()[:12]

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _Items:
    """Page records of transfers: PAGE_FIELDS, media paths relative to the page (OUT/report/), has_video,
    the video's path; the previews of references and targets made once each."""

    def __init__(self, store):
        self.store = store
        self.shapes: dict[tuple, tuple[int, int, int] | None] = {}
        self.previews: dict[tuple, str | None] = {}
        self.videos = set(store.files("store/videos"))
        self.media = set(store.files("report/media"))

    def records(self, rows: list[dict]) -> list[dict]:
        records = []
        for record in rows:
            item = {name: record.get(name) for name in PAGE_FIELDS}
            item["reference"] = item["target"] = None
            item["has_video"] = record["status"] == "ok" and record["video_path"] in self.videos
            key = item["transfer_key"]
            item["video"] = f"../store/videos/{key[:2]}/{key}.mp4" if item["has_video"] else None
            records.append(item)
            if not item["has_video"]:
                continue
            group = (record["embedding_key"], record.get("transfer_config"))
            if group not in self.shapes:  # every output of an embedding and config shares frame count and size
                with self.store.reading(record["video_path"]) as path:
                    info = probe_video(path)
                self.shapes[group] = (info.num_frames, info.height, info.width)
            shape = self.shapes[group]
            for field, kind in (("reference", "video"), ("target", "image")):
                source = record.get(f"{field}_path")
                if (source, shape) not in self.previews:
                    self.previews[source, shape] = _preview(source, self.store, self.media, shape, kind)
                item[field] = self.previews[source, shape]
        return records


def _summary(con, column: str, label: str) -> str:
    """A table of count, mean motion fidelity and mean PSNR per reference (or target), worst first."""
    rows = con.execute(f"""SELECT {column}, count(*), avg(motion_fidelity), avg(psnr_first) FROM results
                           WHERE status = 'ok' GROUP BY {column} ORDER BY 3 ASC NULLS LAST, 1""").fetchall()
    cell = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    body = "".join(f"<tr><td>{html.escape(str(name))}</td><td class=num>{n}</td><td class=num>{cell(mf)}</td>"
                   f"<td class=num>{cell(psnr)}</td></tr>" for name, n, mf, psnr in rows)
    return (f'<div class="summary" id="summary-{label}"><table><tr><th>{label} ({len(rows)})</th><th>videos</th>'
            f"<th>motion fidelity</th><th>PSNR 1st</th></tr>{body}</table></div>")


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


def _failures(con, run_id: str | None) -> tuple[list[dict], int]:
    """The first FAILURES_SHOWN failed inversions and transfers (their latest row is a failure), with their
    errors; and how many there are."""
    run = "WHERE run_id = '" + run_id.replace("'", "''") + "'" if run_id is not None else ""  # a view takes no parameter
    con.execute(f"""CREATE TEMP VIEW failures AS
        SELECT 0 AS kind_order, 'inversion' AS kind, reference_id AS what, error FROM (
            SELECT * FROM embeddings_parts {run}
            QUALIFY row_number() OVER (PARTITION BY embedding_key ORDER BY (status = 'ok') DESC, created_at DESC) = 1)
        WHERE status = 'failed'
        UNION ALL
        SELECT 1, 'transfer', reference_id || ' -> ' || target_id || ' (seed ' || seed || ')', error
        FROM results WHERE status = 'failed'""")
    total = con.execute("SELECT count(*) FROM failures").fetchone()[0]
    shown = con.execute("SELECT kind, what, error FROM failures ORDER BY kind_order LIMIT $n", {"n": FAILURES_SHOWN}).fetchall()
    return [{"kind": k, "what": w, "error": e} for k, w, e in shown], total


def _strip_plots(con, ticks_max: int = 200, bins: int = 40) -> str:
    """A strip plot per reference with ok transfers: its values when few, else its histogram (from DuckDB)."""
    measured = "status = 'ok' AND motion_fidelity IS NOT NULL"
    # per reference with ok transfers: its measured outputs and their mean (None: none measured)
    counts, means = {}, {}
    for ref, n, mean in con.execute("""SELECT reference_id, count(motion_fidelity), avg(motion_fidelity) FROM results
                                       WHERE status = 'ok' GROUP BY 1""").fetchall():
        counts[ref], means[ref] = n, mean
    values: dict[str, list[float]] = {}
    for ref, v in con.execute(f"""SELECT reference_id, motion_fidelity FROM results WHERE {measured} AND reference_id IN
                                  (SELECT reference_id FROM results WHERE {measured} GROUP BY 1 HAVING count(*) <= $m)""",
                              {"m": ticks_max}).fetchall():
        values.setdefault(ref, []).append(v)
    histograms: dict[str, np.ndarray] = {}
    for ref, b, c in con.execute(f"""SELECT reference_id, least(floor((motion_fidelity + 1) / 2 * $bins), $bins - 1)::INT, count(*)
                                     FROM results WHERE {measured} AND motion_fidelity BETWEEN -1 AND 1 AND reference_id IN
                                     (SELECT reference_id FROM results WHERE {measured} GROUP BY 1 HAVING count(*) > $m)
                                     GROUP BY 1, 2""", {"m": ticks_max, "bins": bins}).fetchall():
        histograms.setdefault(ref, np.zeros(bins, np.int64))[b] = c
    return "\n".join(_strip_plot(ref, np.array(values.get(ref, []), float), counts[ref], means[ref], histograms.get(ref))
                     for ref in sorted(counts))


def _strip_plot(reference: str, values: np.ndarray, n: int, mean: float | None, histogram: np.ndarray | None,
                width: int = 360, height: int = 56) -> str:
    """An inline SVG of motion fidelity on [-1, 1], the mean as a red bar: each output a tick (`values`), or
    for many outputs a histogram of 40 bins (`histogram`; its size does not grow with the outputs)."""
    x = lambda v: 10 + (v + 1) / 2 * (width - 20)  # noqa: E731
    if histogram is None:
        marks = "".join(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="14" y2="34" class="tick"><title>{v:.3f}</title></line>'
                        for v in values)
    else:
        edges = np.linspace(-1, 1, len(histogram) + 1)
        top = histogram.max()
        marks = "".join(f'<rect x="{x(lo):.1f}" y="{34 - 24 * c / top:.1f}" width="{x(hi) - x(lo) - 1:.1f}" '
                        f'height="{24 * c / top:.1f}" class="bar"><title>{lo:.2f} to {hi:.2f}: {c}</title></rect>'
                        for c, lo, hi in zip(histogram, edges[:-1], edges[1:]) if c)
    mean_bar = f'<line x1="{x(mean):.1f}" x2="{x(mean):.1f}" y1="8" y2="40" class="mean"/>' if mean is not None else ""
    axis = "".join(f'<text x="{x(v):.1f}" y="52" class="ax">{v:g}</text>' for v in (-1, -0.5, 0, 0.5, 1))
    summary = f"mean {mean:.3f}, n = {n}" if mean is not None else "not measured"
    return (f'<figure class="strip"><figcaption>{html.escape(str(reference))}: {summary}</figcaption>'
            f'<svg width="{width}" height="{height}" role="img" aria-label="motion fidelity of {html.escape(str(reference))}">'
            f'<line x1="10" x2="{width - 10}" y1="24" y2="24" class="axis"/>{marks}{mean_bar}{axis}</svg></figure>')
