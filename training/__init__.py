"""Training module: DC-CLIP distillation and alignment, export, evaluation (imports torch; not on the app path)."""
