"""Evaluation: comparison grids, batch generation and CLIP / DINO scoring."""
