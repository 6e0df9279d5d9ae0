"""The import namespace: the code is one package, ``recall_lm``, laid over the users' folders
(pyproject.toml's package-dir), and nothing of the repository shadows or is shadowed by an installed
distribution, or loads a second copy of the modules under a bare folder name."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import recall_lm.layers
from recall_lm.evals.tools.canary import direct_dependencies

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]  # {"recall_lm.kernels": "kernels", ...}
NOT_CODE = {"evals/lmeval/tasks", "evals/results"}  # lm-eval task files (loaded by path), result files


def _run(code: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _sources() -> list[tuple[str, Path]]:
    """(package name, file) of every .py file under the mapped folders, lm-eval's task files aside."""
    out = []
    for package, folder in PACKAGE_DIR.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel and not any(rel.startswith(skip + "/") for skip in NOT_CODE):
                out.append((".".join([package, *path.parent.relative_to(ROOT / folder).parts]), path))
    return out


def _code_folders() -> set[str]:
    """Every folder that holds code, as a package name (recall_lm.kernels.gla)."""
    return {package for package, _ in _sources()}


def _modules() -> list[str]:
    """Every module of the recall_lm package, by its import name."""
    return [package if path.stem == "__init__" else f"{package}.{path.stem}" for package, path in _sources()]


def test_every_top_level_code_folder_is_mapped_and_has_no_init():
    """A top-level folder with Python code (other than tests/) is a recall_lm subpackage, and is not a
    regular package itself: from the root, ``import kernels`` must find the installed distribution."""
    tops = {p.parent.name for p in ROOT.glob("*/*.py") if not p.parent.name.startswith(".")} - {"tests"}
    assert tops == set(PACKAGE_DIR.values()), "map the new folder in pyproject.toml's package-dir"
    for folder in PACKAGE_DIR.values():
        assert not (ROOT / folder / "__init__.py").exists(), (
            f"{folder}/__init__.py makes {folder} a regular package"
        )


def test_packages_list_names_every_code_folder():
    """pyproject.toml's packages list every folder that holds code (a non-editable install needs them)."""
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _code_folders()


def test_no_top_level_package_shadows_an_installed_distribution():
    provided = importlib.metadata.packages_distributions()
    ours = [d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file()]
    clashes = {name: provided[name] for name in ours if name in provided}
    assert not clashes, (
        f"regular packages at the repository root that installed distributions also provide: {clashes}"
    )


def test_the_installed_package_is_this_checkout():
    """An editable install records absolute paths: a venv made in another clone would test that clone."""
    for path in recall_lm.layers.__path__:
        assert Path(path).resolve().is_relative_to(ROOT), f"recall_lm.layers is {path}, outside {ROOT}"


def test_dependencies_and_every_subpackage_import_together_from_the_root():
    """transformers imports Hugging Face's ``kernels``; from the root it must not find our kernels/."""
    packages = sorted(PYPROJECT["tool"]["setuptools"]["packages"])
    code = (
        "import transformers.modeling_utils, lm_eval, fla.layers, kernels, os\n"
        f"for name in {packages!r}: __import__(name)\n"
        "assert os.path.dirname(kernels.__file__) != os.path.join(os.getcwd(), 'kernels'), kernels.__file__\n"
        "print('ok')"
    )
    done = _run(code)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_no_second_copy_of_a_module_after_importing_everything_and_parsing_every_config():
    """Every module of the repository is loaded under ``recall_lm.`` (or ``tests.``): a bare name
    (``data.mqar_datamodule``) would be a second copy with a second registry."""
    configs = sorted(str(p) for p in (ROOT / "configs").rglob("*.yaml")
                     if "sweeps" not in p.parts and not p.name.startswith("_"))
    code = f"""
import importlib, os, sys, tempfile, torch
for name in {_modules()!r}:
    importlib.import_module(name)
from recall_lm.training import cli
for path in {configs!r} + ["strategies"]:
    args = ["--config", path] if path != "strategies" else [
        "--config", "configs/lm/tiny.yaml", "--config", "configs/strategies/_fsdp.yaml",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32"]
    with torch.device("meta"):
        cli.main(args + ["--trainer.default_root_dir=" + tempfile.mkdtemp()], run=False)
def in_checkout(module):
    spec = getattr(module, "__spec__", None)
    paths = [getattr(module, "__file__", None) or ""] + list(
        getattr(spec, "submodule_search_locations", None) or [])
    paths = [p for p in paths if isinstance(p, str)]
    return any(p.startswith(os.getcwd() + os.sep) and os.sep + ".venv" not in p for p in paths)
bad = sorted(name for name, module in list(sys.modules.items()) if in_checkout(module)
             and not name.startswith(("recall_lm.", "tests."))
             and name not in ("recall_lm", "tests", "__main__"))
print("second copies:", bad)
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "second copies: []" in done.stdout, done.stdout[-2000:]


def test_train_py_runs_from_another_directory(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "fit" in done.stdout, done.stderr[-2000:]


def test_no_sys_path_edits_or_pth_files():
    """Imports resolve through the installed package only: no ``sys.path`` edits, ``PYTHONPATH`` for
    child processes, or ``.pth`` files written by the project."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        hidden = any(part.startswith(".") for part in path.relative_to(ROOT).parts)  # .venv*, .git
        if hidden or path == Path(__file__).resolve():
            continue
        text = path.read_text()
        if any(
            s in text for s in ("sys.path.insert", "sys.path.append", '"PYTHONPATH"', "PYTHONPATH=", '.pth"')
        ):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_ruff_bans_the_bare_folder_names():
    """The lint rule that keeps ``import models`` (a second copy) out of the code; `make test` runs ruff."""
    pytest.importorskip("ruff")
    from ruff.__main__ import find_ruff_bin

    bad = "import models.decoder\nfrom kernels.ops import gated_delta_rule\n"
    done = subprocess.run([find_ruff_bin(), "check", "--stdin-filename", "x.py", "-"], input=bad, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout.count("TID251") == 2, done.stdout + done.stderr
    done = subprocess.run(
        [find_ruff_bin(), "check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:]


def _lock() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))


def test_the_lock_pins_every_dependency_exactly():
    lock = {name.lower().replace("_", "-"): version for name, version in _lock().items()}
    assert all(version and "," not in version for version in lock.values())
    wanted = [name.lower().replace("_", "-") for name in direct_dependencies()]
    assert not [name for name in wanted if name not in lock], "make lock"
    assert "recall-lm" not in lock  # the project itself is installed editable, not from the lock


@pytest.mark.skipif(
    not (Path(sys.prefix) / ".installed").is_file(),
    reason="this environment was not made by `make install` (e.g. the canary's, or a user's own)",
)
def test_make_install_installed_exactly_the_lock():
    """torch, triton and nvidia-* are kept when already installed (a GPU user's build), so not compared."""
    import re

    different = {}
    for name, version in _lock().items():
        if re.match(r"(torch|triton|nvidia-)", name):
            continue
        installed = importlib.metadata.version(name)
        if installed != version:
            different[name] = (installed, version)
    assert not different, f"installed vs locked: {different}; run `make install` again (or `make clean`)"


def _imports(folder: str) -> dict[str, set[str]]:
    """Every module each file under ``folder`` imports (top-level and inside functions)."""
    import ast

    out = {}
    for path in (ROOT / folder).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize(
    "folder, banned",
    [
        (
            "kernels",
            ("recall_lm.layers", "recall_lm.models", "recall_lm.training", "recall_lm.data", "lightning"),
        ),
        ("layers", ("recall_lm.models", "recall_lm.training", "recall_lm.data", "lightning")),
        ("models", ("recall_lm.training", "lightning", "pytorch_lightning")),
    ],
)
def test_data_flows_one_way(folder, banned):
    """kernels/ knows nothing of layers/; layers/ nothing of models/ or Lightning; models/ nothing of
    training/ or Lightning (the Lightning wiring lives in training/; models/export.py reads a run's
    tokenizer, a file beside the checkpoint)."""
    wrong = {
        path: sorted(n for n in names if n.startswith(banned)) for path, names in _imports(folder).items()
    }
    assert not {path: names for path, names in wrong.items() if names}
