"""Where the judged collections (`shared/data` beside the checkout) are, from any clone.

`$CLICKTUNE_SHARED_DATA` wins; else the nearest `shared/data` above this file; else the path on
this project's machines. Tests that need a collection skip, saying so, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

MACHINE_DEFAULT = Path("/work/shared/data")


def shared_data() -> Path:
    if os.environ.get("CLICKTUNE_SHARED_DATA"):
        return Path(os.environ["CLICKTUNE_SHARED_DATA"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return MACHINE_DEFAULT


SHARED_DATA = shared_data()
