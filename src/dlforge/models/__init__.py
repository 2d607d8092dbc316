"""Step 2: the model families, built from the core algorithms in ``layers``."""
