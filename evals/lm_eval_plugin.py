"""Make the plain ``lm_eval`` command know ``--model recall-lm``: ``python -m evals.lm_eval_plugin install``
(``make install`` runs it).

lm-eval has no plugin discovery for models: a model class must be registered in the process before
``lm_eval`` looks it up. ``install`` writes two files into the environment's site-packages: a small
module and a ``.pth`` line importing it at start-up. The module only installs an import hook; when (and
only when) a process imports ``lm_eval.api.registry``, the hook registers ``recall-lm`` as a lazy target
``evals.harness:RecallLM`` and appends this repository to ``sys.path``, so nothing of the project is
imported until lm-eval actually asks for the model. ``uninstall`` removes both files.
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE, PTH = "recall_lm_lm_eval_hook", "recall_lm_lm_eval_hook.pth"

HOOK_SOURCE = '''"""Written by recall-lm's ``python -m evals.lm_eval_plugin install``: registers lm-eval's
``recall-lm`` model (evals.harness.RecallLM in {root}) when lm_eval.api.registry is imported."""
import importlib.abc
import importlib.machinery
import sys

ROOT = {root!r}


class _RegisterRecallLM(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "lm_eval.api.registry":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            if ROOT not in sys.path:
                sys.path.append(ROOT)
            if "recall-lm" not in module.model_registry:
                module.model_registry.register("recall-lm", target="evals.harness:RecallLM")

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _RegisterRecallLM())
'''


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def install() -> Path:
    site = site_packages()
    (site / f"{MODULE}.py").write_text(HOOK_SOURCE.format(root=str(ROOT)))
    (site / PTH).write_text(f"import {MODULE}\n")
    return site


def uninstall() -> None:
    for name in (f"{MODULE}.py", PTH):
        (site_packages() / name).unlink(missing_ok=True)


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action == "install":
        print(f"lm_eval --model recall-lm enabled (hook in {install()})")
    elif action == "uninstall":
        uninstall()
        print("lm_eval --model recall-lm hook removed")
    else:
        sys.exit("usage: python -m evals.lm_eval_plugin install|uninstall")
