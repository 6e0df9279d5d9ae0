"""recall_lm.kernels.cpu_memory: the malloc setting takes effect on glibc and can be switched off."""
import os
import platform
import subprocess
import sys

import pytest

CHECK = "from recall_lm.kernels.cpu_memory import retain_freed_memory; print(retain_freed_memory())"


def _run(env_value=None, check=True):
    env = {k: v for k, v in os.environ.items() if k != "RECALL_LM_MALLOC"}
    if env_value is not None:
        env["RECALL_LM_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=check)
    return out if not check else out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_takes_effect_on_glibc_and_can_be_switched_off():
    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(map(int, version.split(".")[:2])) < (2, 36):
        pytest.skip(f"{libc} {version}: only glibc 2.36 and later are known to take a 1 GiB threshold")
    assert _run() == "True"
    assert _run("system") == "False"


def test_a_misspelt_setting_is_named():
    out = _run("sytem", check=False)
    assert out.returncode != 0
    assert "RECALL_LM_MALLOC must be 'retain' (the default) or 'system', got 'sytem'" in out.stderr
