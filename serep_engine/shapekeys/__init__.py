"""Per-frame displacements on the target compressed into a few shape keys and per-frame weights."""
