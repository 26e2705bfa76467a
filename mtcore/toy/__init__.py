"""The toy world and the toy image-to-video model trained on it (the built-in CPU model).

world (what a clip is: config, appearance, motion, the torus), sampling, render, tokens (the
model's motion input), tracking (finding sprites in generated frames, trajectory metrics),
model (ToyUNet, PixelShuffleVAE), train, evaluate.
"""
