"""The toy world and the toy image-to-video model trained on it (the built-in CPU model).

world (what a clip is: config, appearance, motion, the torus), sampling, render, tokens (the
model's motion input), tracking (finding sprites in generated frames, trajectory metrics),
model (ToyUNet, PixelShuffleVAE), train, evaluate.

May import: mtcore.errors, mtcore.io, mtcore.method, mtcore.data, mtcore.metrics, mtcore.eval (the top
layer: it trains and evaluates with the method itself).
Nothing imports it; the toy model's folder names `mtcore.toy.model` in its model_index.json, and
`mtcore.method.models` imports the project modules a folder names before loading it.
"""
