"""Speed and memory benchmarks: one command per target of issue #4 (see README.md here)."""
