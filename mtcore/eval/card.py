"""The dataset card of an export (`DEST/README.md`, Hugging Face style), its metric histograms
(`metrics.png`) and its provenance table (`provenance.parquet`): what a reader needs to trust the data,
beside the data.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mtcore import CODE_VERSION, METRICS_VERSION
from mtcore.data.manifest import Manifest
from mtcore.data.samples import label_names, sample_types
from mtcore.io.storage import Storage

HISTOGRAMS = ("motion_fidelity", "psnr_first", "ssim_first", "clip_first", "warp_error", "frame_change")
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"))


def size_category(n: int) -> str:
    """Hugging Face's size category of a dataset of n samples."""
    return next((name for limit, name in _SIZES if n < limit), "n>10M")


def _label_names(table: pa.Table, side: str) -> list[str]:
    return [f"{side}_{name}" for name in label_names(table, side)]


def features_yaml(types: dict, indent: str = "  ") -> list[str]:
    """Hugging Face's `dataset_info.features` list for nested {name: dtype or {...}} types."""
    lines = []
    for name, kind in types.items():
        lines.append(f"{indent}- name: {name}")
        if isinstance(kind, dict):
            lines.append(f"{indent}  struct:")
            lines += features_yaml(kind, indent + "  ")
        else:
            lines.append(f"{indent}  dtype: {kind}")
    return lines


def write_provenance(store: Storage, manifest: Manifest, table: pa.Table) -> None:
    """`provenance.parquet`: every source file the samples use (kind, id, path, sha256, labels as JSON,
    and `license` and `source` labels as columns where given)."""
    rows = []
    for kind, items, column in (("reference", manifest.references, "reference_id"),
                                ("target", manifest.targets, "target_id")):
        used = set(table.column(column).to_pylist())
        sha = dict(zip(table.column(column).to_pylist(), table.column(f"{kind}_sha256").to_pylist()))
        for item in items:
            if item.id in used:
                labels = dict(item.labels)
                rows.append({"kind": kind, "id": item.id, "path": str(item.path), "sha256": sha[item.id],
                             "labels": json.dumps(labels, sort_keys=True),
                             "license": None if labels.get("license") is None else str(labels["license"]),
                             "source": None if labels.get("source") is None else str(labels["source"])})
    schema = pa.schema([("kind", pa.string()), ("id", pa.string()), ("path", pa.string()), ("sha256", pa.string()),
                        ("labels", pa.string()), ("license", pa.string()), ("source", pa.string())])
    with store.writing("provenance.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema), str(tmp))


def _histograms(table: pa.Table) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5))
    for ax, name in zip(axes.flat, HISTOGRAMS):
        values = [v for v in table.column(name).to_pylist() if v is not None]
        if values:
            ax.hist(values, bins=30, color="#4472c4")
        else:  # e.g. CLIP metrics of a model whose image encoder cannot say (the toy model)
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{name} (n={len(values)})", fontsize=9)
    fig.suptitle("metrics of the exported samples")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _counts_table(table: pa.Table, column: str, limit: int = 20) -> list[str]:
    counts = Counter(table.column(column).to_pylist())
    lines = ["| value | samples |", "|---|---|"]
    lines += [f"| {json.dumps(value) if not isinstance(value, str) else value} | {n} |"
              for value, n in counts.most_common(limit)]
    if len(counts) > limit:
        lines.append(f"| ({len(counts) - limit} more values) | |")
    return lines


def card_text(manifest: Manifest, table: pa.Table, summary: Any, options: dict) -> str:
    """The card's Markdown: a YAML header Hugging Face reads (license, size, a split per data file
    pattern), then how the data was made, what was kept, and how to load it."""
    info = manifest.dataset
    name = info.name if info else manifest.name
    license_ = info.license if info else "other"
    ext = "tar" if summary.format == "webdataset" else "parquet"
    header = ["---", f"license: {json.dumps(license_)}", f"pretty_name: {json.dumps(name)}", "size_categories:",
              f"- {size_category(summary.kept)}", "task_categories:", "- image-to-video",
              "tags:", "- motion-transfer", "- synthetic", "configs:", "- config_name: default", "  data_files:"]
    for split in summary.splits:
        if summary.splits[split]:
            header += [f"  - split: {split}", f"    path: \"{split}-*.{ext}\""]
    if summary.format == "webdataset":  # the sample's files and the types of its JSON, as loaders read them
        fields = {"__key__": "string", "__url__": "string", "json": sample_types(table), "mp4": "binary", "png": "image"}
        header += ["dataset_info:", "  features:"] + features_yaml(fields, "  ")
    header.append("---")
    lines = header + ["", f"# {name}", ""]
    if info and info.description:
        lines += [info.description, ""]
    lines += ["Videos made by motion-textual inversion (motion-transfer): each sample is a target image moving",
              "like a reference video. One sample per transfer: `<key>.mp4` (the video), `<key>.png` (the target as",
              "the model saw it) and `<key>.json` (labels of both sides, metrics, seed, model, configs, keys, sources).",
              "", "## Splits", "", "| split | samples | shards | bytes |", "|---|---|---|---|"]
    for split, n in summary.splits.items():
        shards = [s for s in summary.shards if s.split == split]
        lines.append(f"| {split} | {n} | {len(shards)} | {sum(s.bytes for s in shards):,} |")
    by = options["split_by"]
    sides = "no reference and no target is" if by == "both" else f"no {by} is"
    lines += ["", f"Split by {by}, by content hash: {sides} in two splits, and adding data never moves an earlier "
                  "one.", ""]
    lines += ["## How the samples were chosen", "", f"- {summary.candidates} finished transfers of the manifest"]
    if summary.gate:
        lines.append(f"- gate `{summary.gate.where}`: kept {summary.gate.kept}, dropped {summary.gate.dropped}")
        lines += [f"  - `{term}` fails on {n}" for term, n in summary.gate.terms] if len(summary.gate.terms) > 1 else []
    if options.get("per_pair"):
        lines.append(f"- per pair `{options['per_pair']}`: dropped {summary.per_pair_dropped}")
    if summary.crossed_dropped:
        lines.append(f"- dropped {summary.crossed_dropped} whose reference and target fall in different splits")
    lines += [f"- kept {summary.kept}", "", "## Labels", ""]
    for side in ("reference", "target"):
        for column in _label_names(table, side):
            lines += [f"### `{column}`", ""] + _counts_table(table, column) + [""]
    if not _label_names(table, "reference") + _label_names(table, "target"):
        lines += ["The manifest gives no labels.", ""]
    lines += ["## Metrics", "", "![metric histograms](metrics.png)", "", "## How it was made", ""]
    models = sorted({(m.model or "built-in toy model", m.revision or "-") for m in manifest.models})
    lines += [f"- model `{m}` revision `{r}`" for m, r in models]
    lines += [f"- inversion config `{c}`" for c in sorted(set(table.column("inversion_config").to_pylist()))]
    lines += [f"- transfer config `{c}`" for c in sorted(set(table.column("transfer_config").to_pylist()))]
    lines += [f"- code version {CODE_VERSION}, metrics version {METRICS_VERSION}",
              f"- manifest `{manifest.file_name}` sha256 `{manifest.sha256}`",
              "- sources: `provenance.parquet` lists every reference video and target image with its sha256 and labels",
              "", "## Loading", "", "```python"]
    first = next(s for s, n in summary.splits.items() if n)
    count = sum(1 for s in summary.shards if s.split == first)
    if summary.format == "webdataset":
        lines += ["import webdataset as wds  # each sample: .mp4, .png, .json",
                  f"samples = wds.WebDataset(\"{first}-{{000000..{count - 1:06d}}}.tar\", shardshuffle=False)",
                  "# Hugging Face datasets: this folder (or a hub copy of it); the header above types every field",
                  "# datasets.load_dataset(\"path/to/this/folder\")"]
    else:
        lines += ["import pyarrow.dataset as ds  # columns: key, mp4, png, json",
                  f"samples = ds.dataset(\"{first}-000000.parquet\").to_table()"]
    lines += ["```", ""]
    return "\n".join(lines)


def write_card(store: Storage, manifest: Manifest, table: pa.Table, summary: Any, options: dict) -> None:
    """`README.md` and `metrics.png` in DEST."""
    store.write_bytes("metrics.png", _histograms(table))
    store.write_bytes("README.md", card_text(manifest, table, summary, options).encode())


__all__ = ["write_card", "write_provenance", "card_text", "size_category"]
