"""pyproject.toml: what `pip install .` installs, checked without installing (see .ci/run)."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import benchmark

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOP_LEVEL = ("benchmark", "eval", "generators", "pipelines")  # fixed by the design card


def _pins() -> dict[str, Requirement]:
    reqs = [Requirement(line.split("#")[0].strip())
            for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def test_the_console_script_is_a88_and_points_at_a_callable():
    assert PYPROJECT["project"]["scripts"] == {"a88": "pipelines.a88:main"}
    module, _, attr = PYPROJECT["project"]["scripts"]["a88"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_package_discovery_finds_exactly_the_four_packages_and_their_subpackages():
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    found = setuptools.find_packages(where=str(ROOT), include=find["include"],
                                     exclude=find.get("exclude", ()))
    on_disk = {".".join(init.parent.relative_to(ROOT).parts)
               for top in TOP_LEVEL for init in (ROOT / top).rglob("__init__.py")}
    assert set(found) == on_disk
    assert {name.split(".")[0] for name in found} == set(TOP_LEVEL)  # not tests/, benchmarks/


def test_no_package_holds_a_data_file_the_wheel_would_leave_out():
    """The wheel carries .py files only; a data file read at run time would need package-data."""
    others = [p.relative_to(ROOT) for top in TOP_LEVEL for p in (ROOT / top).rglob("*")
              if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert others == []


def test_the_version_has_one_source():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "benchmark.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", benchmark.__version__)


def test_every_dependency_is_pinned_and_its_pin_is_in_range():
    """requirements.txt is the pinned set (byte-identical builds); installing it first must
    leave `pip install .` nothing to change."""
    pins = _pins()
    deps = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    deps += [Requirement(d) for d in PYPROJECT["project"]["optional-dependencies"]["test"]]
    for dep in deps:
        pin = pins.get(canonicalize_name(dep.name))
        assert pin is not None, f"{dep.name} is in pyproject.toml but not in requirements.txt"
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        if exact:
            assert dep.specifier.contains(exact[0]), f"{dep.name}=={exact[0]} is outside {dep.specifier}"


def test_an_installed_copy_matches_the_checkout():
    """After `pip install -e .` (.ci/run): the console script's target and the version the
    metadata recorded are those of this checkout (a stale install would show another)."""
    try:
        dist = importlib.metadata.distribution("attribution88")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("attribution88 is not installed here (pip install -e . installs it)")
    assert dist.version == benchmark.__version__
    (script,) = [e for e in dist.entry_points if e.group == "console_scripts"]
    assert script.name == "a88" and script.load() is importlib.import_module("pipelines.a88").main



def test_setup_py_shim_gives_beam_setup_file_the_pyproject_package():
    """`--setup_file ./setup.py` (Beam's way to ship code to workers) builds this package."""
    done = subprocess.run([sys.executable, "setup.py", "--name", "--version"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["attribution88", benchmark.__version__]
