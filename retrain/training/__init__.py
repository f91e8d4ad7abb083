"""Training on cached features: splits, batches, the head and its optimisers, early stopping, fine-tuning."""
