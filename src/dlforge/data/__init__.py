"""Step 1 of the pipeline: read, clean, split and featurise data."""
