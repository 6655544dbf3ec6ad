"""How torch's OpenMP threads wait between operations, chosen before torch loads.

The engine's steps are many small ops, so on a 2-core CPU the wait between them matters: a short spin
(``GOMP_SPINCOUNT=5000``) keeps most of a quiet machine's speed and avoids the default's collapse when the CPU is
shared (docs/engine.md, "CPU threads"). A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins. Importing
this module sets it, so the CLI, the app and the tests import it before anything imports torch."""

from __future__ import annotations

import os

SPIN_COUNT = 5000

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))


def wait_policy() -> str:
    """The OpenMP wait setting of this process, for reports whose timings depend on it."""
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if name in os.environ:
            return f"{name}={os.environ[name]}"
    return "libgomp default"
