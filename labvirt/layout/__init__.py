"""Reading tripleo-lab overrides files: loading with locations, then validation."""
