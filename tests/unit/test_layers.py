"""The code's layering (pyproject.toml, [tool.importlinter]): each layer imports only the layers below
it, no package's modules import each other in a cycle, and app.py and settings.py, which the linter
cannot take as packages, sit where the contract says."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "pyproject.toml"
# settings.py sits between kafka_io and alerts: what it may import of the project.
BELOW_SETTINGS = ("alerts", "tables", "aggregations", "ops", "formats")


def _project_imports(path: Path) -> set[str]:
    """The project's top-level modules and packages a module imports (type-only imports included)."""
    contract = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]
    project = {*contract["root_packages"], "app", "settings"}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(top for name in names if (top := name.split(".")[0]) in project)
    return found


def test_the_import_contracts_hold() -> None:
    # In a process of its own: import-linter configures logging, which would disable the loggers of
    # every module imported before it in this one.
    command = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(CONFIG), "--no-cache"]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_settings_imports_only_what_is_below_it() -> None:
    assert _project_imports(ROOT / "settings.py") <= set(BELOW_SETTINGS)


def test_every_top_level_package_is_in_the_contract() -> None:
    """A new package must take its place in the layers (and in app.PIPELINE_LOGGERS)."""
    from app import PIPELINE_LOGGERS

    contract = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]
    tooling = {"bench", "devstack", "scripts", "testing", "tests"}  # not the product: outside the contract
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - tooling
    assert packages == set(contract["root_packages"])
    assert set(PIPELINE_LOGGERS) == packages | {"app", "settings"}


def test_the_distribution_ships_every_package_of_the_product() -> None:
    """pyproject.toml's packages: the contract's and the embedded stack's (`pip install .`)."""
    config = tomllib.loads(CONFIG.read_text())
    assert set(config["tool"]["setuptools"]["packages"]) == {*config["tool"]["importlinter"]["root_packages"],
                                                             "devstack"}
    assert set(config["tool"]["setuptools"]["py-modules"]) == {"app", "settings"}


def test_the_console_script_is_fausts_command_line_with_this_app() -> None:
    script = "import sys, app; sys.argv = ['events-pipeline', 'batch', '--help']; app.main()"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: events-pipeline batch [OPTIONS]"), result.stdout
