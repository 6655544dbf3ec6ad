"""Two request logs of the same people side by side: how many distinct substitutes each gave, and how many of
their adapters are the same bit for bit (e.g. a batch against the sequential stream, docs/many.md).

    python scripts/compare_request_logs.py runs/many/legato-sequential.requests.safetensors \
        runs/many/legato-batch-k100.requests.safetensors
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.adapters.request_log import RequestLog  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    backend = EmbeddedFaceBackend.from_pretrained()
    a, b = RequestLog.load(args.a, backend), RequestLog.load(args.b, backend)
    n = min(len(a), len(b))
    for name, log in (("a", a), ("b", b)):
        subs = {str(r.adapter.description["target"].get("pool_index")) for r in log.requests[:n]}
        print(f"{name}: {len(subs)} distinct substitutes for {n} people")
    same = sum(x.adapter.digest() == y.adapter.digest() for x, y in zip(a.requests[:n], b.requests[:n], strict=True))
    print(f"identical adapters: {same} of {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
