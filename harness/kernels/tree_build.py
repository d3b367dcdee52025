"""Build a kernel for the harness from a source tree: stock, patched, or with the fix reverted.

A kernel developer tests a tree, not a Debian package. ``build_tree`` takes a *source* (a git
tree at a ref, an unpacked source directory, a source tarball, or a Debian
``linux-source-X.Y[=version]`` package fetched from any suite) and a *variant* (a patch
series, and whether to toggle the fix under test: revert it where the source has it, apply
it where it has not), and makes a kernel virtme-ng boots, with its own modules:

1. the source, once per source, under ``build/kernel-trees/<name>-<key>/src`` (a tarball
   extracted, a git ref archived, a directory copied: the user's tree is never written);
2. the config, once per source and fragment: virtme-ng's small config (``vng --kconfig``)
   plus configs/kernel/harness.config (what the harness needs, one comment per option),
   ``make olddefconfig``, and a check that every line of the fragment survived;
3. the variant's changes applied to the source (the files they touch backed up first), the
   source check of the result (harness.kernels.source_check: fix, bio_check_eod() shape,
   prediction);
4. ``make bzImage modules`` in the tree's one build directory (``O=``), so the second
   variant of a tree rebuilds only what its change touches (the fix reverted: nvme-core);
   progress every 30 s;
5. a bootable copy of the result, ``variants/<name>-<key>/kdir`` (bzImage, .config, the
   modules in place, modules.order, the generated headers and a ``source`` link, so bpftrace
   can read the kernel's headers in the guest), and ``build.json``;
6. the touched source files restored.

A variant already built from the same source, fragment, patches and toggle is found by its
``build.json`` and not built again. Boot one with ``nvmf-harness vm --kernel KDIR`` (or any
command's ``--kernel``): ``vng --run KDIR`` loads its modules from it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.core.errors import MissingToolError, ToolError, UsageError
from harness.core.paths import BUILD_DIR, CONFIGS_DIR
from harness.core.procs import ProcResult, require_tool, run
from harness.kernels import source_check
from harness.kernels.kbuild import toggle_fix

TREES_DIR = BUILD_DIR / "kernel-trees"
FRAGMENT = CONFIGS_DIR / "kernel" / "harness.config"
RECORD_FILE = "build.json"
FORMAT_VERSION = 1
MULTIPATH_C = "drivers/nvme/host/multipath.c"
EXTRACT_TIMEOUT_S = 1800.0
CONFIG_TIMEOUT_S = 600.0
MAKE_TIMEOUT_S = 4 * 3600.0
PROGRESS_EVERY_S = 30.0
# What a kernel build needs on the host, by the package that has it: (tool or header, package).
BUILD_TOOLS: tuple[tuple[str, str], ...] = (
    ("gcc", "gcc"),
    ("make", "make"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("perl", "perl"),
    ("pahole", "dwarves"),
    ("/usr/include/gelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
)
# Files of a build directory a guest needs to boot it with its modules (vng --run KDIR), and
# the generated headers bpftrace reads with the source's own.
KDIR_FILES: tuple[str, ...] = (
    ".config",
    "arch/x86/boot/bzImage",
    "System.map",
    "Module.symvers",
    "modules.order",
    "modules.builtin",
    "modules.builtin.modinfo",
    "include/config/kernel.release",
)
KDIR_DIRS: tuple[str, ...] = ("include/generated", "arch/x86/include/generated")

Say = Callable[[str], None]


@dataclass(frozen=True)
class TreeSource:
    """Where a kernel's source comes from.

    ``kind``: "tarball", "git" or "dir"; ``path``: it; ``ref``: the git ref (git only);
    ``identity``: what the build cache keys it by (a commit, or a file's path, size and
    mtime, or a directory's listing hash); ``name``: a short name for directories."""

    kind: str
    path: Path
    identity: str
    name: str
    ref: str = ""

    def describe(self) -> str:
        return f"{self.path} at {self.ref} ({self.identity[:12]})" if self.ref else str(self.path)


@dataclass(frozen=True)
class TreeVariant:
    """What to change in the source before building: ``patches`` applied in order
    (``patch -p1``), then the fix under test toggled when ``toggle_fix`` (removed where the
    source has it, inserted where it has not). ``name``: its directory's name."""

    name: str = "as-shipped"
    patches: tuple[Path, ...] = ()
    toggle_fix: bool = False

    def key(self) -> str:
        """A hash of the patches' contents and the toggle (the variant's cache key)."""
        digest = hashlib.sha256(f"toggle={self.toggle_fix}".encode())
        for patch in self.patches:
            digest.update(patch.read_bytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class TreeBuild:
    """One built kernel, as recorded in ``build.json`` beside its kdir.

    ``kdir``: what ``vng --run`` boots; ``release``: its ``uname -r``; ``check``: the source
    check of the variant's source (source_check.SourceCheck.to_dict()); ``build_seconds``:
    the make of this variant (0 when found cached)."""

    source: str
    source_kind: str
    source_identity: str
    variant: str
    patches: list[str]
    toggled_fix: bool
    release: str
    kdir: str
    check: dict[str, Any]
    fragment_sha256: str
    config_seconds: float
    build_seconds: float
    built_at: str
    format_version: int = FORMAT_VERSION
    cached: bool = field(default=False, compare=False)

    @property
    def prediction(self) -> str:
        return str(self.check.get("prediction", ""))

    def to_json(self) -> str:
        data = asdict(self)
        del data["cached"]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def check_build_tools() -> None:
    """Raise MissingToolError with the one apt command when a tool or header a kernel build
    needs is missing."""
    missing = []
    for tool, package in BUILD_TOOLS:
        found = Path(tool).is_file() if tool.startswith("/") else shutil.which(tool) is not None
        if not found and package not in missing:
            missing.append(package)
    if missing:
        raise MissingToolError(
            f"a kernel build needs {', '.join(missing)}",
            hint=f"apt-get install {' '.join(missing)}",
        )


def _safe(text: str) -> str:
    return re.sub(r"[^\w.+-]", "_", text)[:60]


def dir_identity(path: Path) -> str:
    """A hash of a directory's files (relative path, size, mtime), .git left out."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            full = Path(root) / name
            try:
                stat = full.lstat()
            except OSError:
                continue
            digest.update(
                f"{full.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def resolve_source(text: str, ref: str = "") -> TreeSource:
    """The source named by ``text``: a git tree (``ref``, default HEAD: committed state
    only), a source directory, or a tarball (a Debian source package is fetched first:
    harness.kernels.debian_archive). Raises UsageError when it is none of these."""
    path = Path(text).resolve()
    if (path / ".git").exists():
        commit = run(
            ["git", "-C", str(path), "rev-parse", "--verify", f"{ref or 'HEAD'}^{{commit}}"],
            timeout_s=60,
        )
        if not commit.ok:
            raise UsageError(f"{path}: no commit {ref or 'HEAD'}: {commit.one_line_error()}")
        sha = commit.stdout.strip()
        return TreeSource("git", path, sha, f"{path.name}-{sha[:12]}", ref or "HEAD")
    if ref:
        raise UsageError(f"--ref {ref}: {path} is not a git tree")
    if path.is_dir():
        if not (path / "Makefile").is_file() or not (path / "block").is_dir():
            raise UsageError(f"{path} is not a kernel source tree (no Makefile and block/)")
        return TreeSource("dir", path, dir_identity(path), path.name)
    if path.is_file():
        return tarball_source(path, path.name.split(".tar")[0])
    if text.startswith("debian:"):
        raise UsageError(f"{text}: fetch it first (harness.kernels.debian_archive)")
    raise UsageError(
        f"{text}: no such tree, directory or tarball",
        hint="a git tree, a source directory, a linux-*.tar.* or debian:linux-source-X.Y",
    )


def tarball_source(path: Path, name: str) -> TreeSource:
    stat = path.stat()
    identity = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return TreeSource("tarball", path, identity.hexdigest(), name)


def tree_dir(source: TreeSource) -> Path:
    """``build/kernel-trees/<name>-<key>``: the source copy, the build and the variants."""
    return TREES_DIR / f"{_safe(source.name)}-{source.identity[:12]}"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One build of a tree at a time (a second waits)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prepare_source(source: TreeSource, src: Path, say: Say) -> None:
    """Put the source into ``src`` once (a stamp marks it complete)."""
    stamp = src.parent / ".src-complete"
    if stamp.is_file() and stamp.read_text() == source.identity:
        return
    shutil.rmtree(src, ignore_errors=True)
    staging = src.with_name("src.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.monotonic()
    say(f"source: {source.describe()} -> {src}")
    if source.kind == "tarball":
        result = run(["tar", "-xf", str(source.path), "-C", str(staging)], EXTRACT_TIMEOUT_S)
        tops = [p for p in staging.iterdir() if p.is_dir()]
        if not result.ok or len(tops) != 1:
            raise ToolError(f"cannot extract {source.path}: {result.one_line_error() or 'no top'}")
        tops[0].rename(src)
    elif source.kind == "git":
        archive = staging / "src.tar"
        result = run(
            ["git", "-C", str(source.path), "archive", "-o", str(archive), source.identity],
            EXTRACT_TIMEOUT_S,
        )
        if not result.ok:
            raise ToolError(f"git archive {source.identity[:12]}: {result.one_line_error()}")
        src.mkdir(parents=True)
        result = run(["tar", "-xf", str(archive), "-C", str(src)], EXTRACT_TIMEOUT_S)
        if not result.ok:
            raise ToolError(
                f"cannot unpack the archive of {source.path}: {result.one_line_error()}"
            )
    else:
        result = run(["cp", "-a", f"{source.path}/.", str(staging)], EXTRACT_TIMEOUT_S)
        if not result.ok:
            raise ToolError(f"cannot copy {source.path}: {result.one_line_error()}")
        shutil.rmtree(staging / ".git", ignore_errors=True)
        staging.rename(src)
        if (src / ".config").exists():  # configured in tree: make O= refuses such a tree
            run(["make", "-C", str(src), "mrproper"], CONFIG_TIMEOUT_S, check=True)
    shutil.rmtree(staging, ignore_errors=True)
    stamp.write_text(source.identity)
    say(f"source ready in {time.monotonic() - started:.0f} s")


def fragment_lines(fragment: Path) -> list[str]:
    """The option lines of a config fragment (``CONFIG_X=v`` and ``# CONFIG_X is not set``)."""
    pattern = re.compile(r"^(CONFIG_\w+=.*|# CONFIG_\w+ is not set)$")
    return [
        line.strip() for line in fragment.read_text().splitlines() if pattern.match(line.strip())
    ]


def unmet_options(fragment: Path, config_text: str) -> list[str]:
    """The fragment's lines that the final .config does not have (an option set elsewhere, or
    one whose dependencies are missing); ``# ... is not set`` is met by an absent option."""
    have: dict[str, str] = {}
    for line in config_text.splitlines():
        if match := re.match(r"^(CONFIG_\w+)=(.*)$", line):
            have[match.group(1)] = match.group(2)
        elif match := re.match(r"^# (CONFIG_\w+) is not set$", line):
            have[match.group(1)] = "n"
    unmet = []
    for line in fragment_lines(fragment):
        if line.startswith("#"):
            name = line.split()[1]
            if have.get(name, "n") != "n":
                unmet.append(f"{line} (got {name}={have[name]})")
        else:
            name, value = line.split("=", 1)
            if have.get(name, "n") != value:
                unmet.append(f"{line} (got {have.get(name, 'n')})")
    return unmet


def vng_path() -> str:
    """PATH for ``vng --kconfig``: virtme-ng's helpers (virtme-configkernel) beside vng."""
    return f"{Path(require_tool('vng')).parent}:{os.environ.get('PATH', '')}"


def configure(src: Path, out: Path, fragment: Path, say: Say) -> float:
    """virtme-ng's config plus ``fragment``, once per fragment (``out/.harness-fragment``
    holds its hash); the seconds it took (0 when done already). Raises ToolError naming the
    options that did not survive olddefconfig."""
    key = hashlib.sha256(fragment.read_bytes()).hexdigest()
    mark = out / ".harness-fragment"
    if mark.is_file() and mark.read_text() == key and (out / ".config").is_file():
        return 0.0
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    say(f"config: virtme-ng's (vng --kconfig) + {fragment.name}")
    result = run_in(src, ["vng", "--kconfig", f"O={out}"], CONFIG_TIMEOUT_S, f"PATH={vng_path()}")
    if not result.ok or not (out / ".config").is_file():
        raise ToolError(f"vng --kconfig failed: {result.one_line_error()}", hint=f"in {src}")
    merge = [str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(out)]
    result = run_in(src, [*merge, str(out / ".config"), str(fragment)], CONFIG_TIMEOUT_S)
    if not result.ok:
        raise ToolError(f"merge_config.sh: {result.one_line_error()}")
    result = run(["make", "-C", str(src), f"O={out}", "olddefconfig"], CONFIG_TIMEOUT_S)
    if not result.ok:
        raise ToolError(f"make olddefconfig: {result.one_line_error()}")
    unmet = unmet_options(fragment, (out / ".config").read_text())
    if unmet:
        raise ToolError(
            f"the kernel config lacks {len(unmet)} option(s) of {fragment.name}: "
            + "; ".join(unmet[:4]),
            hint="an option this source does not have, or one whose dependencies it lacks",
        )
    mark.write_text(key)
    return time.monotonic() - started


def run_in(cwd: Path, argv: Sequence[str], timeout_s: float, *assignments: str) -> ProcResult:
    """``run(argv)`` in ``cwd`` with environment ``assignments`` (``NAME=value``)."""
    return run(["env", "-C", str(cwd), *assignments, *argv], timeout_s)


def touched_files(patch: Path) -> list[str]:
    """The files a unified diff changes (its ``+++ b/path`` lines, -p1), in order."""
    files = []
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith("+++ ") and not line.startswith("+++ /dev/null"):
            name = line[4:].split("\t")[0].strip()
            name = name.split("/", 1)[1] if "/" in name else name
            if name not in files:
                files.append(name)
    return files


class SourceChanges:
    """The variant's changes to ``src``, undone by ``restore`` (also after a crash: the
    backups and their list stay in ``backup`` until restored)."""

    def __init__(self, src: Path, backup: Path) -> None:
        self.src = src
        self.backup = backup

    def restore(self) -> None:
        """Put back every backed-up file and remove the files the variant added."""
        listing = self.backup / "files.json"
        if not listing.is_file():
            return
        for name, existed in json.loads(listing.read_text()).items():
            target = self.src / name
            if existed:
                shutil.copy2(self.backup / "files" / name, target)
                target.touch()  # newer than its object: make rebuilds it
            else:
                target.unlink(missing_ok=True)
        shutil.rmtree(self.backup)

    def keep(self, names: Sequence[str]) -> None:
        """Back up ``names`` (relative to src) before they change."""
        listing = self.backup / "files.json"
        kept: dict[str, bool] = json.loads(listing.read_text()) if listing.is_file() else {}
        for name in names:
            if name in kept:
                continue
            original = self.src / name
            kept[name] = original.is_file()
            if kept[name]:
                copy = self.backup / "files" / name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(original, copy)
        self.backup.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps(kept, indent=2))

    def apply(self, variant: TreeVariant) -> None:
        """Apply ``variant``'s patches and toggle. Raises ToolError (after restoring) when a
        patch does not apply or the fix cannot be toggled."""
        try:
            for patch in variant.patches:
                self.keep(touched_files(patch))
                result = run(
                    [
                        "patch",
                        "-p1",
                        "--batch",
                        "--forward",
                        "--no-backup-if-mismatch",
                        "-d",
                        str(self.src),
                        "-i",
                        str(patch),
                    ],
                    timeout_s=120,
                )
                if not result.ok:
                    raise ToolError(f"{patch.name} does not apply: {result.one_line_error()}")
            if variant.toggle_fix:
                self.keep([MULTIPATH_C])
                path = self.src / MULTIPATH_C
                toggle_fix(path, want_fix=not source_check.has_fix(path.read_text()))
        except BaseException:
            self.restore()
            raise


def make(src: Path, out: Path, jobs: int, say: Say, what: str) -> float:
    """``make bzImage modules`` (ccache when installed), saying how far it got every
    PROGRESS_EVERY_S seconds; its seconds. Raises ToolError with the first error line and
    the log (out/build.log) when it fails."""
    argv = ["make", "-C", str(src), f"O={out}", f"-j{jobs}", "bzImage", "modules"]
    env = dict(os.environ)
    if shutil.which("ccache"):
        argv.append("CC=ccache gcc")
        env.update(CCACHE_DIR=str(BUILD_DIR / "ccache"), CCACHE_NOHASHDIR="1")
        env["CCACHE_BASEDIR"] = str(TREES_DIR)
    started = last = time.monotonic()
    compiled = 0
    log = out / "build.log"
    errors: list[str] = []
    with (
        log.open("w") as stream,
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            stream.write(line)
            if line.lstrip().startswith(("CC", "LD", "AR", "AS")):
                compiled += 1
            if " error: " in line or line.startswith("make: ***"):
                errors.append(line.strip())
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                say(f"building {what}: {compiled} steps, {now - started:.0f} s")
                last = now
            if now - started > MAKE_TIMEOUT_S:
                proc.kill()
                raise ToolError(f"make ran over {MAKE_TIMEOUT_S:g} s", hint=f"log: {log}")
        code = proc.wait()
    if code != 0:
        raise ToolError(
            f"make failed: {errors[0] if errors else f'exit {code}'}", hint=f"log: {log}"
        )
    return time.monotonic() - started


def snapshot_kdir(out: Path, kdir: Path, src: Path) -> None:
    """A bootable copy of ``out`` in ``kdir`` (see the module docstring): KDIR_FILES, every
    module of modules.order, KDIR_DIRS and a ``source`` link to ``src``."""
    staging = kdir.with_name(kdir.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    for name in KDIR_FILES:
        if (out / name).is_file():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / name, staging / name)
    for name in KDIR_DIRS:
        if (out / name).is_dir():
            shutil.copytree(out / name, staging / name)
    for line in (out / "modules.order").read_text().splitlines():
        module = re.sub(r"\.o$", ".ko", line.strip())
        if module:
            (staging / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / module, staging / module)
    (staging / "source").symlink_to(src)
    shutil.rmtree(kdir, ignore_errors=True)
    staging.rename(kdir)


def cached(record_path: Path) -> TreeBuild | None:
    """The record when its kernel is still there."""
    try:
        data = json.loads(record_path.read_text())
        build = TreeBuild(**data, cached=True)
    except (OSError, ValueError, TypeError):
        return None
    kdir = Path(build.kdir)
    if build.format_version != FORMAT_VERSION or not (kdir / "arch/x86/boot/bzImage").is_file():
        return None
    return build


def build_tree(
    source: TreeSource,
    variant: TreeVariant,
    jobs: int = 2,
    fragment: Path = FRAGMENT,
    say: Say = print,
) -> TreeBuild:
    """Build (or find built) ``variant`` of ``source`` (see the module docstring). Raises
    MissingToolError for a missing build tool, UsageError for a bad patch path, ToolError
    when a step fails, source_check.UnknownSource when the variant's source has a shape the
    source check does not know (a toggle needs the fix's known shape)."""
    for patch in variant.patches:
        if not patch.is_file():
            raise UsageError(f"patch {patch} not found")
    check_build_tools()
    top = tree_dir(source)
    fragment_key = hashlib.sha256(fragment.read_bytes()).hexdigest()
    variant_key = hashlib.sha256(f"{variant.key()}\0{fragment_key}".encode()).hexdigest()
    home = top / "variants" / f"{_safe(variant.name)}-{variant_key[:12]}"
    with _locked(top):
        found = cached(home / RECORD_FILE)
        if found is not None:
            say(f"{variant.name}: built already ({found.release}, {found.prediction}) {found.kdir}")
            return found
        src, out = top / "src", top / "out"
        changes = SourceChanges(src, top / "backup")
        changes.restore()  # a build that died left its changes: undo them
        prepare_source(source, src, say)
        config_s = configure(src, out, fragment, say)
        changes.apply(variant)
        try:
            check = source_check.check_tree(src, source.describe())
            say(f"{variant.name}: {check.describe()}")
            build_s = make(src, out, jobs, say, f"{check.version} {variant.name}")
            release = (out / "include/config/kernel.release").read_text().strip()
            snapshot_kdir(out, home / "kdir", src)
        finally:
            changes.restore()
        build = TreeBuild(
            source=str(source.path),
            source_kind=source.kind,
            source_identity=source.identity,
            variant=variant.name,
            patches=[str(p) for p in variant.patches],
            toggled_fix=variant.toggle_fix,
            release=release,
            kdir=str(home / "kdir"),
            check=check.to_dict(),
            fragment_sha256=fragment_key,
            config_seconds=round(config_s, 1),
            build_seconds=round(build_s, 1),
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        (home / RECORD_FILE).write_text(build.to_json())
        say(f"{variant.name}: {release} built in {build_s:.0f} s -> {build.kdir}")
        return build


def kdir_record(kdir: Path) -> TreeBuild | None:
    """The build record beside a kdir (``<variant>/kdir`` -> ``<variant>/build.json``)."""
    return cached(kdir.parent / RECORD_FILE)


def is_kdir(path: Path) -> bool:
    """Whether ``path`` is a bootable kernel build directory (vng --run takes it)."""
    return (
        path.is_dir()
        and (path / "arch/x86/boot/bzImage").is_file()
        and (path / ".config").is_file()
    )


def kdir_release(path: Path) -> str:
    """``uname -r`` of a kdir's kernel (include/config/kernel.release), or ""."""
    try:
        return (path / "include/config/kernel.release").read_text().strip()
    except OSError:
        return ""
