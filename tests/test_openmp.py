"""The OpenMP wait policy: short spins by default, the user's own choice untouched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import legato_core.openmp, os; print(os.environ.get('GOMP_SPINCOUNT'))"


def _clean_env() -> dict[str, str]:
    """This process's environment without any OpenMP wait setting."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}


def _spin_count(**env: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**_clean_env(), **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_default_is_a_short_spin():
    from legato_core.openmp import SPIN_COUNT

    assert _spin_count() == str(SPIN_COUNT)


@pytest.mark.parametrize("env, expected", [({"OMP_WAIT_POLICY": "PASSIVE"}, "None"),
                                           ({"GOMP_SPINCOUNT": "123"}, "123")])
def test_a_users_own_setting_wins(env, expected):
    assert _spin_count(**env) == expected


def test_cli_sets_it_before_torch_loads():
    code = "import sys; sys.argv = ['legato_core', '--help']; import legato_core.__main__"
    probe = ("import builtins, os; real = builtins.__import__\n"
             "def spy(name, *a, **k):\n"
             "    if name == 'torch' and 'seen' not in os.environ:\n"
             "        os.environ['seen'] = os.environ.get('GOMP_SPINCOUNT', 'unset')\n"
             "        print('torch import with GOMP_SPINCOUNT', os.environ['seen'], flush=True)\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = spy\n" + code)
    out = subprocess.run([sys.executable, "-c", probe], env=_clean_env(), capture_output=True, text=True)
    from legato_core.openmp import SPIN_COUNT

    assert f"torch import with GOMP_SPINCOUNT {SPIN_COUNT}" in out.stdout


def test_reports_can_say_which_wait_policy_they_ran_under(monkeypatch):
    from legato_core.openmp import wait_policy

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "5000")
    assert wait_policy() == "GOMP_SPINCOUNT=5000"
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert wait_policy() == "OMP_WAIT_POLICY=PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert wait_policy() == "libgomp default"
