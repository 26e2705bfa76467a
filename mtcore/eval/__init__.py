"""Looking at results: a run's catalogs made into tables, pages and pictures for people.

evaluation  transfers joined with their metrics, summarised per reference, target, model or config
results_sql the same join as a DuckDB table over the catalogs, in bounded memory (evaluate, report)
report      `mt report`: one static HTML page of every transfer with its metrics (assets/report.html)
sheet       contact sheets: a PNG with a row of frames per video

May import: mtcore.errors, mtcore.io, mtcore.method, mtcore.data, mtcore.metrics.
"""
