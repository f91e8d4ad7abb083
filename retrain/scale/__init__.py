"""Bottleneck extraction on Apache Beam (the optional ``beam`` extra; nothing else imports it)."""
