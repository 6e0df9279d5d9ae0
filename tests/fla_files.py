"""Load single torch-only files of fla (flash-linear-attention) as independent references in tests."""
import importlib.util
from pathlib import Path

import pytest


def load_fla_file(relative_path: str):
    """One torch-only file of fla, loaded without importing the fla package (which takes tens of seconds)."""
    spec = importlib.util.find_spec("fla")
    if spec is None:
        pytest.skip("fla is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / relative_path
    if not path.exists():
        pytest.skip(f"this fla version has no {relative_path}")
    module_spec = importlib.util.spec_from_file_location(f"_fla_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
