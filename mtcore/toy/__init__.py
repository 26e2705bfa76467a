"""A procedural toy world: short wrap-around clips of one sprite on a tiling background.

`mtcore.toy.world` samples and renders clips with known sprite trajectories, encodes the
motion as tokens for a small image-to-video model, and tracks sprites to score generated clips.
"""
