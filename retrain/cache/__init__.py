"""The bottleneck cache: the on-disk store, reading rows back, filling it with features and distorted views."""
