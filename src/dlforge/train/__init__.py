"""Step 4: the training loop, its callbacks and metrics."""
