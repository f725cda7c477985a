"""Write the catalogue's parameter and FLOP counts that ship with the package.

    python scripts/catalogue_counts.py            # core/models/catalogue_counts.json

Builds every architecture of ``CATALOGUE_NAMES`` at its family's default size (ResNet-1202
included: minutes on a 2-core CPU) with :func:`core.catalogue.describe`, the function the cache
uses, and writes only the counts; names, depths and the paper's errors stay in code.
``tests/core/models/test_catalogue_counts.py`` rebuilds them and requires the file to match.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.catalogue import SHIPPED_COUNTS, describe
from core.models.specs import CATALOGUE_NAMES, parse_architecture


def main() -> None:
    counts = {}
    for name in CATALOGUE_NAMES:
        entry = describe(parse_architecture(name))
        counts[name] = {"params": entry["params"], "flops": entry["flops"]}
        print(f"{name:14} {entry['params']:>12,} params {entry['flops']:>16,} FLOPs", flush=True)
    record = {
        "about": "Trainable parameters and multiply-adds per image at each family's default "
        "input size; written by scripts/catalogue_counts.py",
        "keras": metadata.version("keras"),
        "counts": counts,
    }
    SHIPPED_COUNTS.write_text(json.dumps(record, indent=1) + "\n")
    print(SHIPPED_COUNTS)


if __name__ == "__main__":
    main()
