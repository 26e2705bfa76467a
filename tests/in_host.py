"""Commands the two-host tests run inside a simulated host (tests/hosts.py), where the S3 server is reachable.

    python tests/in_host.py upload LOCAL_FOLDER URL     copy a folder's files to a URL prefix
    python tests/in_host.py put LOCAL_FILE URL          copy one file
    python tests/in_host.py inspect OUT                 one JSON object: the store's files and the catalogs,
                                                        read with DuckDB over the registered s3fs filesystem
                                                        and with pandas over s3fs (no project code for those)

Credentials and the endpoint come from the standard AWS variables of the environment.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def upload(local: str, url: str) -> None:
    from mtcore.io.storage import Storage

    store = Storage(url)
    for path in Path(local).rglob("*"):
        if path.is_file():
            store.put_file(path.relative_to(local).as_posix(), path)


def inspect(out: str) -> dict:
    import duckdb
    import pandas as pd
    import s3fs

    from mtcore.io.storage import Storage

    store = Storage(out)
    files = {prefix: store.files(prefix) for prefix in ("store/embeddings", "store/videos", "claims", ".probe", ".loads")}
    endpoint = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem(client_kwargs=endpoint))
    tables = {}
    for table, key, path in (("embeddings", "embedding_key", "path"), ("transfers", "transfer_key", "video_path")):
        rows = con.sql(f"SELECT {key} AS key, status, {path} AS path, worker, model_id FROM "
                       f"read_parquet('{out}/catalog/{table}/*.parquet')").fetchall()
        tables[table] = [{"key": k, "status": s, "path": p, "worker": w, "model_id": m} for k, s, p, w, m in rows]
    runs = pd.read_parquet(f"{out}/catalog/runs", storage_options={"client_kwargs": endpoint})
    return {"files": files, "tables": tables, "runs": json.loads(runs.to_json(orient="records"))}


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "upload":
        upload(*args)
    elif command == "put":
        from mtcore.io.storage import Storage

        local, url = args
        folder, name = url.rsplit("/", 1)
        Storage(folder).put_file(name, local)
    elif command == "inspect":
        print(json.dumps(inspect(*args)))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
