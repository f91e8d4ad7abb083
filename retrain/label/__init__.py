"""Using a trained model: label images in batches, evaluate on labelled folders, relabel folder trees."""
