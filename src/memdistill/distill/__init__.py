"""Ways to turn knowledge into a memory that is not the real training data."""
