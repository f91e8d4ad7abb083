"""Writing the trained model: frozen graph, labels and sidecar, SavedModel, TFLite; each file checked."""
