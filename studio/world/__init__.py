"""The toy world: a procedural world of coloured shapes, and the small models pretrained on it.

`scene` draws the world (deterministic from a seed), `judge` reads a picture back by a pixel rule,
`architectures` holds the shapes of the models, `pretrain` trains them, and `builtin` locates the
shipped `toy-sd15` and `toy-clip`. Nothing here imports gradio.
"""
