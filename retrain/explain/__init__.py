"""What the model sees: Grad-CAM, filter pictures, training curves, the HTML report."""
