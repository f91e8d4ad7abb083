"""Pretrained networks: the backbone registry, downloads, loading, cuts for fine-tuning, the graph check,
and opening any model file (frozen graph, SavedModel, TFLite)."""
