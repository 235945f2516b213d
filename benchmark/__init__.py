"""The benchmark's domain: protocol, config schema and the pure steps of a build (no Beam).

__version__ is the tool's version (the `attribution88` distribution, `a88 --version`), its one
source: pyproject.toml reads it from here. The protocol has its own,
benchmark.protocol.PROTOCOL_VERSION.
"""

__version__ = "0.1.0"
