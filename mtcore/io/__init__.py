"""Input and output: bytes in and out of files and buckets, and nothing about the method.

storage     one storage layer for local folders and URLs (s3://, ...), on fsspec
locations   local paths and URLs as strings: join, parent, resolve, inside
fileio      atomic writes (write aside, then rename), stale temporaries, sha256 of a file
outroot     whether an output root can take a run, from the driver and from every worker
modelcache  a model in a bucket, fetched once per machine into a local cache
videoio     reading reference videos and target images, writing H.264 mp4 (ffmpeg)
frames      conversions between frame layouts (uint8 arrays, [-1, 1] and [0, 1] tensors)
yamlio      YAML for people: repeated keys refused, errors that name the line

May import: mtcore.errors only (the bottom layer).
"""
