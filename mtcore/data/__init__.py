"""The data model of a bulk run: what is asked (manifest, pairs), what names it (keys), what was made (catalogs).

manifest  the YAML manifest: references, targets, pairs, seeds, configs; one-line errors per field
pairs     which (reference, target) pairs a manifest asks for: cross, a list, or sampled per reference
media     checking a manifest's media one by one (`mt validate`)
keys      content-addressed cache keys: sha256 of input bytes, model identity, config, code version
catalog   the store of artifacts and the Parquet catalogs (embeddings, transfers, metrics, runs)

May import: mtcore.errors, mtcore.io, mtcore.method (configs and model identity, never a model).
"""
