"""Images in: find and split a labelled folder, budget and decode pixels, distort a photo."""
