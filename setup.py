"""For Beam's `--setup_file ./setup.py`, which ships a package to workers by building it.

Everything about the package is in pyproject.toml; this only hands it to setuptools.
"""

from setuptools import setup

setup()
