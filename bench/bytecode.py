"""Measure the proxy as it ships: from bytecode, not compiled from source at every start.

The proxy's image and local mode's runtime venv are compiled to bytecode
(``UV_COMPILE_BYTECODE``, ``uv sync --compile-bytecode``). The development venv is not, and
with ``PYTHONDONTWRITEBYTECODE`` set no run ever writes a ``.pyc`` into it: a proxy started
from it compiles every module it imports, which costs start-up time and leaves the
compiler's garbage in the heap (about 4 MB more RSS when idle, and a ~12 MB spike when the
first HTTP/2 connection loads the codec and its Huffman table). The benchmark compiles the
interpreter's packages before it starts a proxy from it, so idle and peak RSS are the
shipped proxy's.
"""

from __future__ import annotations

import subprocess

# Run by the target interpreter: every sys.path directory outside the standard library (its
# site-packages and the editable workspace sources the .pth files add). compileall skips
# files whose .pyc is up to date, so a warm run costs little.
_COMPILE = """
import compileall, sys, sysconfig
stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
dirs = [p for p in sys.path if p and p not in stdlib and not p.endswith(".zip")]
ok = all(compileall.compile_dir(d, quiet=1, workers=0) for d in dirs)
sys.exit(0 if ok else 1)
"""


def compile_bytecode(python: str) -> None:
    """Write ``.pyc`` files for everything ``python`` can import outside its stdlib."""
    result = subprocess.run(
        [python, "-c", _COMPILE], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        # A file that does not compile (a test fixture of some package) is no reason to stop;
        # the rest is compiled. Say so, in case it is one the proxy imports.
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        print(f"bench: some modules of {python} did not compile: {tail}")
