#!/usr/bin/env python3
"""Print pinned requirements from pyproject.toml, the one place they are written.

    pinned.py NAME          the pinned requirement of one dependency (e.g. ``torch==2.13.0``)
    pinned.py --build-system  the build requirements, space separated
"""

import re
import sys
import tomllib
from pathlib import Path

data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
if sys.argv[1:] == ["--build-system"]:
    print(" ".join(data["build-system"]["requires"]))
elif len(sys.argv) == 2:
    reqs = data["project"]["dependencies"] + [r for extra in data["project"]["optional-dependencies"].values() for r in extra]
    found = [r for r in reqs if re.split(r"[=<>!~\[ ]", r, maxsplit=1)[0] == sys.argv[1]]
    if not found:
        sys.exit(f"pinned.py: {sys.argv[1]!r} is not a dependency in pyproject.toml")
    print(found[0])
else:
    sys.exit(__doc__)
