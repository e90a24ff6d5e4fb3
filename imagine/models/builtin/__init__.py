"""The embedded default model `imagine/shapes`: a small text-to-image model of a procedural world
of coloured shapes, trained by `imagine train-builtin` and shipped in `weights/`.

world.py     the world: colours, shapes, positions, the prompt grammar, rendering
build.py     its parts as stock diffusers/transformers classes (tokenizer, text encoder, UNet, VAE)
train.py     the training recipe (reproducible from a seed, checkpoints, resume)
evaluate.py  the scoreboard: generate from grammar prompts, check every picture procedurally
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
