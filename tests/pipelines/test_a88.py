"""The `a88` command: every entry point under one name, in-process (a fresh-venv install of torch
and Beam is too slow for a test; .ci/run installs the project and calls the console script)."""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import __version__
from pipelines import a88

ROOT = Path(__file__).resolve().parents[2]

# (path under a88, module, the name the module's help uses when run directly)
ENTRY_POINTS = [
    (("build",), "pipelines.build_attribution88", "python -m pipelines.build_attribution88"),
    (("verify",), "pipelines.verify", "python -m pipelines.verify"),
    (("export",), "pipelines.export_repmix", "python -m pipelines.export_repmix"),
    (("train",), "eval.train", "python -m eval.train"),
    (("predict",), "eval.predict", "python -m eval.predict"),
    (("score",), "eval.score", "python eval/score.py"),
    (("attack",), "eval.attack", "python -m eval.attack"),
    (("generators", "train"), "generators.cli", "python -m generators.train"),
    (("generators", "convert"), "generators.convert", "python -m generators.convert"),
]
IDS = [" ".join(path) for path, _, _ in ENTRY_POINTS]


def _leaves(commands, prefix=()):
    for name, target in commands.items():
        if isinstance(target, a88.Group):
            yield from _leaves(target.commands, (*prefix, name))
        else:
            yield (*prefix, name), target.module


def _run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        a88.main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_the_table_is_every_entry_point():
    assert sorted(_leaves(a88.COMMANDS)) == sorted((path, module) for path, module, _ in ENTRY_POINTS)


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"a88 {__version__}"


def test_help_lists_every_subcommand_with_an_example(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0 and out.startswith("usage: a88 ")
    for name, target in a88.COMMANDS.items():
        assert f"  {name}  " in out and target.summary in out
    assert "Example:\n  a88 build " in out
    code, out, _ = _run(["generators", "--help"], capsys)
    assert code == 0 and out.startswith("usage: a88 generators ")
    assert "  train  " in out and "  convert  " in out and "Example:\n  a88 generators train " in out


@pytest.mark.parametrize("path,module,direct", ENTRY_POINTS, ids=IDS)
def test_subcommand_help_names_a88_and_ends_with_an_example(path, module, direct, capsys):
    code, out, _ = _run([*path, "--help"], capsys)
    prog = "a88 " + " ".join(path)
    assert code == 0 and out.startswith(f"usage: {prog} ")
    assert f"Example:\n  {prog} " in out or f"Examples:\n  {prog} " in out
    assert direct not in out.split("Example")[-1]


@pytest.mark.parametrize("path,module,direct", ENTRY_POINTS, ids=IDS)
def test_module_form_keeps_its_own_name(path, module, direct, capsys):
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(module).main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith(f"usage: {direct} ")
    assert f"\n  {direct} " in out.split("Example")[-1]


@pytest.mark.parametrize("path,module,direct", ENTRY_POINTS, ids=IDS)
def test_every_example_parses(path, module, direct, capsys):
    """The examples are commands a reader copies: each must be accepted by its own parser."""
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    examples = [line.strip()[len(direct):] for line in capsys.readouterr().out.split("Example")[-1]
                .splitlines() if line.strip().startswith(direct + " ")]
    assert examples
    for example in examples:
        parsed = mod.parse_args(shlex.split(example))
        assert parsed is not None, example


@pytest.mark.parametrize("path,module,direct", ENTRY_POINTS, ids=IDS)
def test_dispatch_passes_the_rest_of_argv_to_the_modules_main(path, module, direct, monkeypatch):
    calls = []
    monkeypatch.setattr(importlib.import_module(module), "main",
                        lambda argv, prog: calls.append((argv, prog)) or 7)
    rest = ["--out", "x y", "--help", "--set", "a.b=1"]
    assert a88.main([*path, *rest]) == 7
    assert calls == [(rest, "a88 " + " ".join(path))]


def test_unknown_subcommands_and_misuse_exit_2_naming_the_problem(capsys):
    code, _, err = _run(["bild"], capsys)
    assert code == 2 and "invalid choice: 'bild'" in err and "'build'" in err
    code, _, err = _run(["generators", "sample"], capsys)
    assert code == 2 and err.startswith("usage: a88 generators") and "invalid choice: 'sample'" in err
    code, _, err = _run([], capsys)
    assert code == 2 and "required: COMMAND" in err
    code, _, err = _run(["--verbose", "build"], capsys)
    assert code == 2 and "unrecognized arguments: --verbose" in err


def test_help_loads_neither_torch_nor_beam():
    """Import on dispatch: `a88 --help` answers at once (a fresh interpreter; here both are loaded)."""
    code = ("import sys\nfrom pipelines import a88\n"
            "for argv in (['--help'], ['generators', '--help'], ['--version']):\n"
            "    try:\n        a88.main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'apache_beam', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_build_without_a_config_outside_a_checkout_says_to_pass_one(tmp_path, monkeypatch, capsys):
    build = importlib.import_module("pipelines.build_attribution88")
    monkeypatch.setattr(build, "DEFAULT_CONFIG", tmp_path / "site-packages" / "configs" / "mini.yaml")
    assert a88.main(["build", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pass --config FILE" in err and str(tmp_path / "site-packages") in err
    assert not (tmp_path / "out").exists()


def test_the_readme_table_lists_every_subcommand_beside_its_module_form():
    rows = [line.split("|") for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `a88 ")]
    table = {row[1].strip(" `"): row[2].strip(" `") for row in rows}
    assert table == {f"a88 {name}": direct for name, (_, _, direct) in zip(IDS, ENTRY_POINTS)}


def test_a_command_without_an_example_is_refused():
    from benchmark.command_line import command_parser

    with pytest.raises(ValueError, match="a88 new: .* at least one example"):
        command_parser("a88 new", "a new command", [])
