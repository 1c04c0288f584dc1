"""The shared floor under every package of Mobile Zoo: atomic file publication, JSON reading, image data, the
environment fingerprint, and the project's error base classes.

It imports none of the project's other packages (``zoo``, ``export``, ``latency_tables``, ``search``, ``mzoo``),
so each of them can use it; importing it loads nothing heavy (no torch).
"""
