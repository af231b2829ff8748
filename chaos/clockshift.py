"""Build the wall-clock shifter the clock nemesis preloads (``chaos/native/clockshift.c``).

Compiled per run with the machine's C compiler into the run's directory; without one the
clock nemesis is not available and the harness says so (``clockshift_unavailable``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).parent / "native" / "clockshift.c"


def clockshift_unavailable() -> str | None:
    """None if the shifter can be built here, else why not."""
    if shutil.which("cc") is None:
        return "no C compiler (cc) to build chaos/native/clockshift.c (apt-get install gcc)"
    return None


def build_clockshift(out_dir: Path) -> Path:
    """Compile the shifter into ``out_dir``; returns the shared library's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / "clockshift.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(library), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return library
