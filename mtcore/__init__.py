"""motion-transfer's ML core: motion-textual inversion on Stable Video Diffusion (diffusers).

Never imports prefect or ray: usable and testable alone. One concern a module:
models (loading, identity, tiny models), routing (which tokens each attention sees),
embedding (the motion embedding and its file), inversion, sampling (transfer),
videoio, keys (content-addressed cache keys), catalog (Parquet records), manifest.
"""

# Bumped whenever a change alters what an inversion or transfer produces; part of every cache key.
CODE_VERSION = "1"
# Bumped whenever a change alters a metric's value (mtcore.metrics); a new version is computed where missing.
# Here, not in mtcore.metrics, so planning a run knows it without importing OpenCV and scikit-image.
METRICS_VERSION = "1"

__all__ = ["CODE_VERSION", "METRICS_VERSION"]
