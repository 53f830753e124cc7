"""End-to-end recipes that run the whole stanchat pipeline: `python -m training.recipes.tiny --out DIR`."""
