"""How torch's OpenMP threads wait between operations, chosen before torch loads.

The engine's steps are many small ops, so the wait between them matters on a 2-core CPU. Measured with 60 forget
steps on 2 threads (the 22,500-step generator, validation id 100,601; training plus target search), quiet and
beside one busy process:

| waiting | quiet | busy |
|---|---|---|
| libgomp's default (spin ~300,000 rounds, then sleep) | 11 s | 148-168 s |
| ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once; what legato set until now) | 18.2 s | 23.6 s |
| ``GOMP_SPINCOUNT=5000`` (spin briefly, then sleep): the default here | 12.0 s | 31.5 s |
| ``GOMP_SPINCOUNT=1000`` | 16.2 s | 25.6 s |

A short spin keeps most of the quiet machine's speed and avoids the default's collapse when the CPU is shared.
A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins. Importing this module sets it, so the CLI, the app
and the tests import it before anything imports torch (later, libgomp has already read its settings).
"""

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
