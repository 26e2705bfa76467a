"""The store layout, atomic writes and the Parquet catalogs (read back by pandas and DuckDB too)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtcore.data.catalog import SCHEMAS, append_rows, compact, ok_keys, read_table, store_path

KEY = "ab" + "0" * 62
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def transfer_row(key: str, status: str = "ok", **over) -> dict:
    row = {
        "transfer_key": key, "embedding_key": "e" * 64, "reference_id": "wave", "target_id": "cat",
        "target_sha256": "t" * 64, "seed": 3, "model_id": "local:xyz",
        "video_path": f"store/videos/{key[:2]}/{key}.mp4" if status == "ok" else None,
        "status": status, "error": None if status == "ok" else "boom", "seconds": 1.5,
        "worker": "w1", "created_at": NOW,
    }
    return {**row, **over}


def embedding_row(key: str, status: str = "ok") -> dict:
    return {
        "embedding_key": key, "reference_id": "wave", "reference_sha256": "r" * 64, "model_id": "local:xyz",
        "num_frames": 8, "tokens_per_frame": 5,
        "path": f"store/embeddings/{key[:2]}/{key}.safetensors" if status == "ok" else None,
        "status": status, "error": None if status == "ok" else "nan loss", "seconds": 2.0,
        "worker": "w1", "created_at": NOW,
    }


def test_store_paths(tmp_path):
    assert store_path(tmp_path, "embeddings", KEY) == tmp_path / "store/embeddings/ab" / f"{KEY}.safetensors"
    assert store_path(tmp_path, "transfers", KEY) == tmp_path / "store/videos/ab" / f"{KEY}.mp4"
    with pytest.raises(ValueError, match="kind"):
        store_path(tmp_path, "images", KEY)
    with pytest.raises(ValueError, match="cache key"):
        store_path(tmp_path, "transfers", "../../etc/passwd")


def test_append_and_read_back_with_schema_types(tmp_path):
    path = append_rows(tmp_path, "transfers", [transfer_row(KEY), transfer_row("cd" + "1" * 62, "failed")])
    assert path.parent == tmp_path / "catalog" / "transfers"
    assert path.name.startswith("part-") and path.suffix == ".parquet"
    assert pq.read_schema(path).equals(SCHEMAS["transfers"])
    df = read_table(tmp_path, "transfers")
    assert list(df.columns) == SCHEMAS["transfers"].names
    assert df["transfer_key"].tolist() == [KEY, "cd" + "1" * 62]
    assert df["seed"].tolist() == [3, 3]
    assert df["video_path"].isna().tolist() == [False, True]
    assert df["created_at"].iloc[0] == pd.Timestamp("2024-05-01 12:00", tz="UTC")


def test_each_append_is_a_new_file_and_empty_rows_write_nothing(tmp_path):
    assert append_rows(tmp_path, "embeddings", []) is None
    assert not (tmp_path / "catalog").exists()
    a = append_rows(tmp_path, "embeddings", [embedding_row(KEY)])
    b = append_rows(tmp_path, "embeddings", [embedding_row("cd" + "1" * 62, "failed")])
    assert a != b
    assert len(read_table(tmp_path, "embeddings")) == 2


def test_read_empty_table_has_columns(tmp_path):
    df = read_table(tmp_path, "runs")
    assert len(df) == 0 and list(df.columns) == SCHEMAS["runs"].names
    assert ok_keys(tmp_path, "transfers") == set()


def test_ok_keys_only_counts_ok_rows(tmp_path):
    good, bad, retried = "aa" + "0" * 62, "bb" + "0" * 62, "cc" + "0" * 62
    first = [transfer_row(good), transfer_row(bad, "failed"), transfer_row(retried, "failed")]
    append_rows(tmp_path, "transfers", first)
    append_rows(tmp_path, "transfers", [transfer_row(retried)])
    assert ok_keys(tmp_path, "transfers") == {good, retried}
    append_rows(tmp_path, "embeddings", [embedding_row(good), embedding_row(bad, "failed")])
    assert ok_keys(tmp_path, "embeddings") == {good}
    with pytest.raises(ValueError, match="embeddings or transfers"):
        ok_keys(tmp_path, "runs")


@pytest.mark.parametrize(
    "row, message",
    [
        ({k: v for k, v in transfer_row(KEY).items() if k != "seed"}, "missing column.*seed"),
        ({**transfer_row(KEY), "colour": "red"}, "unknown column.*colour"),
        (transfer_row(KEY, worker=None), "worker must not be null"),
        (transfer_row(KEY, status="done"), "status must be 'ok' or 'failed'"),
        (transfer_row(KEY, video_path=None), "status ok needs video_path"),
        (transfer_row(KEY, "failed", error=None), "failed needs an error"),
        (transfer_row(KEY, created_at=dt.datetime(2024, 5, 1)), "timezone-aware"),
        (transfer_row(KEY, seed="three"), "transfers"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        append_rows(tmp_path, "transfers", [transfer_row("aa" + "0" * 62), row])
    assert not list(tmp_path.rglob("*.parquet"))


def test_unknown_table_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown catalog table"):
        append_rows(tmp_path, "jobs", [{"a": 1}])


def test_runs_table_round_trip(tmp_path):
    row = {"run_id": "r1", "manifest_path": "/m/demo.yaml", "manifest_sha256": "m" * 64,
           "started_at": NOW, "finished_at": NOW + dt.timedelta(minutes=3),
           "inversions_computed": 1, "inversions_cached": 2, "transfers_computed": 3,
           "transfers_cached": 4, "failed": 0}
    append_rows(tmp_path, "runs", [row])
    df = read_table(tmp_path, "runs")
    assert df.iloc[0]["transfers_cached"] == 4
    assert df.iloc[0]["finished_at"] - df.iloc[0]["started_at"] == pd.Timedelta(minutes=3)


def test_readers_ignore_in_flight_tmp_files(tmp_path, monkeypatch):
    tmp_names = []
    real_write = pq.write_table
    def spy(table, where):
        tmp_names.append(where.name)
        real_write(table, where)

    monkeypatch.setattr(pq, "write_table", spy)
    append_rows(tmp_path, "transfers", [transfer_row(KEY)])
    (tmp_name,) = tmp_names
    # DuckDB's glob reads hidden files too, so an in-flight file must not end in .parquet.
    assert tmp_name.startswith(".part-") and not tmp_name.endswith(".parquet")
    folder = tmp_path / "catalog" / "transfers"
    # What a writer killed mid-append leaves behind: a partial file under the same name.
    (folder / tmp_name).write_bytes(b"PAR1 partial")
    assert len(read_table(tmp_path, "transfers")) == 1
    assert len(pd.read_parquet(folder)) == 1
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/**/*.parquet')").fetchall()[0][0]
    assert n == 1


def test_duckdb_and_pandas_read_catalog_without_project_code(tmp_path):
    append_rows(tmp_path, "transfers", [transfer_row("aa" + "0" * 62), transfer_row("bb" + "0" * 62, "failed")])
    append_rows(tmp_path, "transfers", [transfer_row("cc" + "0" * 62, seed=7)])
    glob = f"{tmp_path}/catalog/transfers/**/*.parquet"
    rows = duckdb.sql(
        f"SELECT transfer_key, seed, status FROM read_parquet('{glob}') ORDER BY transfer_key"
    ).fetchall()
    assert rows == [("aa" + "0" * 62, 3, "ok"), ("bb" + "0" * 62, 3, "failed"), ("cc" + "0" * 62, 7, "ok")]
    types = {r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()}
    assert types["seed"] == "BIGINT" and types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    df = pd.read_parquet(tmp_path / "catalog" / "transfers")
    assert sorted(df["seed"]) == [3, 3, 7]
    assert pa.types.is_timestamp(pa.Schema.from_pandas(df).field("created_at").type)


def test_compaction_keeps_every_row_and_later_appends(tmp_path):
    rows = [transfer_row(f"{i:02x}" + "0" * 62, "ok" if i % 3 else "failed") for i in range(60)]
    for i in range(0, 60, 5):  # 12 small parts, as a long run leaves them
        append_rows(tmp_path, "transfers", rows[i : i + 5])
    before = read_table(tmp_path, "transfers")
    from mtcore.data.catalog import compact, part_files

    assert compact(tmp_path, "transfers", rows_per_file=25) == (12, 3, 60)
    after = read_table(tmp_path, "transfers")
    key = ["transfer_key", "status"]
    assert sorted(map(tuple, after[key].values)) == sorted(map(tuple, before[key].values))
    assert ok_keys(tmp_path, "transfers") == {r["transfer_key"] for r in rows if r["status"] == "ok"}
    append_rows(tmp_path, "transfers", [transfer_row("ff" + "1" * 62)])  # writers go on appending
    assert len(part_files(tmp_path, "transfers")) == 4 and len(read_table(tmp_path, "transfers")) == 61
    assert compact(tmp_path, "transfers")[1:] == (1, 61)
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path}/catalog/transfers/**/*.parquet')").fetchall()
    assert n == [(61,)]


def test_compacting_the_runs_table_orders_by_start(tmp_path):
    """catalog/runs has no created_at column: its parts compact in order of the runs' starts."""
    for minutes in (5, 1):
        start = NOW + dt.timedelta(minutes=minutes)
        append_rows(tmp_path, "runs", [{"run_id": f"r{minutes}", "manifest_path": "m.yaml", "manifest_sha256": "0" * 64,
                                        "started_at": start, "finished_at": start, "inversions_computed": 0,
                                        "inversions_cached": 0, "transfers_computed": 0, "transfers_cached": 0,
                                        "failed": 0}])
    assert compact(tmp_path, "runs") == (2, 1, 2)
    assert read_table(tmp_path, "runs").run_id.tolist() == ["r1", "r5"]


def test_a_run_compacts_only_the_tables_it_left_fragmented(tmp_path):
    from mtcore.data.catalog import compact_fragmented, part_files

    rows = [transfer_row(f"{i:02x}" + "0" * 62) for i in range(12)]
    for i in range(0, 12, 2):  # 6 parts
        append_rows(tmp_path, "transfers", rows[i : i + 2])
    append_rows(tmp_path, "embeddings", [])  # no table, no parts: nothing to do
    assert compact_fragmented(tmp_path, max_parts=6) == {}
    assert compact_fragmented(tmp_path, max_parts=5) == {"transfers": (6, 1, 12)}
    assert len(part_files(tmp_path, "transfers")) == 1 and ok_keys(tmp_path, "transfers") == {r["transfer_key"] for r in rows}
