"""Data: sources, scenarios, augmentation."""
