"""Generate Gossamer's Python protobuf/gRPC modules from libs/api/proto.

Two gRPC flavours are generated side by side from the same protos: ``<name>_pb2_grpc.py``
(grpcio, used by the control-plane servers and the tests' fake servers) and
``<name>_grpc.py`` (grpclib, pure asyncio on ``h2``, used by the proxy's control-plane
clients because importing grpcio's C core would add 15-23 MB to every sidecar).

The generated code is committed so that services import it without a build
step; CI runs ``--check`` so the committed modules can never drift from the
``.proto`` files. Generation always happens in a scratch directory first, which
keeps a failed protoc run from leaving a half-written package behind and lets
``--check`` compare byte for byte.

Usage::

    python libs/api/generate.py           # rewrite libs/api/src/gossamer_api/proxy
    python libs/api/generate.py --check   # exit 1 and list stale files if out of date
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
PROTO_ROOT = API_DIR / "proto"
PROTO_PACKAGE = Path("gossamer_api") / "proxy"
DEFAULT_OUTPUT_ROOT = API_DIR / "src"

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", "_grpc.py")

INIT_TEXT = '''"""Generated protobuf and gRPC modules for the Linkerd proxy API.

Do not edit: regenerate with ``python libs/api/generate.py`` (``make protos``).
"""
'''


class GenerateError(Exception):
    """protoc or one of its plugins is missing or failed."""


def proto_files() -> list[Path]:
    """The .proto files to compile, relative to PROTO_ROOT, in a stable order."""
    files = sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    if not files:
        raise GenerateError(f"no .proto files found under {PROTO_ROOT / PROTO_PACKAGE}")
    return [f.relative_to(PROTO_ROOT) for f in files]


def _plugin(name: str) -> Path:
    """Find a protoc plugin script, preferring the venv that runs this script."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise GenerateError(
            f"protoc plugin {name!r} not found; install the dev dependency group "
            "(cd /work/main && uv sync --frozen)"
        )
    return Path(found)


def generate_into(output_root: Path) -> None:
    """Run protoc with the Python, grpcio, grpclib and mypy-protobuf outputs into output_root."""
    out = str(output_root)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--plugin=protoc-gen-grpclib_python={_plugin('protoc-gen-grpclib_python')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--grpclib_python_out={out}",
        *(str(p) for p in proto_files()),
    ]
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GenerateError(
            f"protoc failed (exit {result.returncode}):\n{result.stderr.strip() or result.stdout}"
        )
    package_dir = output_root / PROTO_PACKAGE
    (package_dir / "__init__.py").write_text(INIT_TEXT)


def _generated_files(package_dir: Path) -> dict[str, bytes]:
    """Map each generated file's name to its contents (only files generate.py owns)."""
    if not package_dir.is_dir():
        return {}
    files = {}
    for path in sorted(package_dir.iterdir()):
        if path.is_file() and (
            path.name == "__init__.py" or path.name.endswith(GENERATED_SUFFIXES)
        ):
            files[path.name] = path.read_bytes()
    return files


def stale_files(expected: dict[str, bytes], actual: dict[str, bytes]) -> list[str]:
    """Describe every difference between freshly generated and committed files."""
    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            problems.append(f"missing: {name}")
        elif name not in expected:
            problems.append(f"no longer generated: {name}")
        elif expected[name] != actual[name]:
            problems.append(f"out of date: {name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed generated code is stale",
    )
    parser.add_argument(
        "--output-root",
        type=Path,
        default=DEFAULT_OUTPUT_ROOT,
        help=f"directory that holds gossamer_api/proxy (default: {DEFAULT_OUTPUT_ROOT})",
    )
    args = parser.parse_args(argv)
    target_dir: Path = args.output_root / PROTO_PACKAGE

    with tempfile.TemporaryDirectory(prefix="gossamer-protos-") as scratch:
        scratch_root = Path(scratch)
        (scratch_root / PROTO_PACKAGE).mkdir(parents=True)
        try:
            generate_into(scratch_root)
        except GenerateError as exc:
            print(f"generate.py: {exc}", file=sys.stderr)
            return 2
        fresh = _generated_files(scratch_root / PROTO_PACKAGE)

        committed = _generated_files(target_dir)
        problems = stale_files(fresh, committed)
        if args.check:
            if problems:
                print(
                    f"generated protobuf code in {target_dir} is stale; "
                    "run `make protos` (python libs/api/generate.py):",
                    file=sys.stderr,
                )
                for problem in problems:
                    print(f"  {problem}", file=sys.stderr)
                return 1
            print(f"generated protobuf code in {target_dir} is up to date ({len(fresh)} files)")
            return 0

        target_dir.mkdir(parents=True, exist_ok=True)
        for name in committed.keys() - fresh.keys():
            (target_dir / name).unlink()
        for name, content in fresh.items():
            if committed.get(name) != content:
                (target_dir / name).write_bytes(content)
        print(f"wrote {len(fresh)} files to {target_dir} ({len(problems)} changed)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
