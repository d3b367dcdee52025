"""The commands about kernels and faults, from the host: ``history`` (which Debian kernels
were ever affected), ``faults`` (every fault, and whether a kernel has what it needs),
``kernel`` (the prepared kernel under test), ``build-variants`` and ``build-nvmet`` (the
out-of-tree modules), ``releases`` (Debian releases and their sources) and ``check-source``
(what a kernel source predicts).

Each front end imports its modules when it runs, not at the top: every command (``--help``
too) loads every cli module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.core.console import PROG, say
from harness.core.errors import HarnessError, UsageError
from harness.core.exits import ExitCode


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``history`` and ``faults``."""
    hist = sub.add_parser(
        "history", help="which Debian kernel versions were ever affected (their changelogs)"
    )
    hist.add_argument(
        "--release", action="append", help="installed kernel release (default: every one)"
    )
    hist.set_defaults(func=cmd_history)
    flt = sub.add_parser("faults", help="every fault, what it needs, whether this kernel has it")
    flt.add_argument(
        "--release", help="kernel release whose modules to check (default: the prepared one)"
    )
    flt.add_argument("--running", action="store_true", help="check the running kernel instead")
    flt.add_argument("--json", action="store_true", help="as JSON")
    flt.set_defaults(func=cmd_faults)
    add_build_commands(sub)


def cmd_history(args: argparse.Namespace) -> int:
    """Per Debian kernel line (6.1, 6.12, ...) among the installed images, from the newest
    one's changelog: where the fix and the zero-size bio_check_eod commit first appear, and
    so which Debian versions were ever affected as shipped (harness/kernels/changelog.py)."""
    from harness.kernels import changelog, releases  # lazy: import cost (module docstring)

    names = args.release or releases.installed_releases()
    if not names:
        raise HarnessError("no kernel image installed", hint="sudo scripts/setup")
    newest: dict[tuple[int, ...], str] = {}
    for name in names:
        line = tuple(releases.version_key(name)[:2])
        if line not in newest or releases.version_key(name) > releases.version_key(newest[line]):
            newest[line] = name
    for line in sorted(newest):
        history = changelog.release_history(newest[line])
        print(f"{'.'.join(map(str, line))}: {history.summary()}", flush=True)
    return ExitCode.OK


def cmd_faults(args: argparse.Namespace) -> int:
    """Every fault with what it needs, checked against the kernel under test's modules
    (``--release``, else the prepared one; ``--running``: the running kernel)."""
    from harness.kernels import prepared  # lazy: import cost (module docstring)
    from harness.report import fault_table

    release = args.release or prepared.prepared_release()
    checker = fault_table.modinfo_checker(release) if release or args.running else None
    infos = fault_table.fault_infos(checker)
    if args.json:
        print(fault_table.to_json(infos))
        return ExitCode.OK
    which = release or ("the running kernel" if args.running else "no kernel (not checked)")
    print(f"faults (modules checked in {which}):")
    print(fault_table.render(infos))
    return ExitCode.OK


# --- the prepared kernel, builds and sources -------------------------------------------------


def add_build_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``kernel``, ``build-variants``, ``build-nvmet``, ``releases`` and
    ``check-source``."""
    kernel = sub.add_parser(
        "kernel", help="the kernel under test scripts/setup prepares (build/prepared-kernel.json)"
    )
    kernel_sub = kernel.add_subparsers(dest="kernel_command", required=True)
    choose = kernel_sub.add_parser(
        "choose", help='print "RELEASE<TAB>VERSION<TAB>HOW": the release setup would prepare'
    )
    choose.add_argument("release", nargs="?", default="", help="a release to insist on")
    record = kernel_sub.add_parser("record", help="check its installed packages, write the record")
    record.add_argument("release")
    record.add_argument("chosen_by", help="why this release (for the record)")
    kernel_sub.add_parser(
        "current", help="print the recorded release; exit 1 when its packages are gone"
    )
    kernel_sub.add_parser("show", help="the record in one line")
    packages = kernel_sub.add_parser(
        "packages", help="the image, headers and source packages of a release, one a line"
    )
    packages.add_argument("release")
    kernel_sub.add_parser(
        "host", help="the host's Debian release and its kernel packages (exit 2: unsupported)"
    )
    kernel.set_defaults(func=cmd_kernel)

    variants = sub.add_parser(
        "build-variants",
        help="build nvme-core/fabrics/tcp out of tree, fixed and unfixed, for a release",
    )
    variants.add_argument("--release", help="kernel release (default: the prepared one)")
    variants.add_argument("--cache-dir", type=Path, help="default: build/modules")
    source = variants.add_mutually_exclusive_group()
    source.add_argument(
        "--source-tarball",
        type=Path,
        help="default: /usr/src/linux-source-X.Y.tar.xz of the release's line",
    )
    source.add_argument(
        "--own-source",
        action="store_true",
        help="the release's own Debian source (linux-source-X.Y=<its version>, downloaded "
        "once into build/kernel-sources)",
    )
    variants.add_argument("--patch", type=Path, help="default: the fix in patches/")
    variants.add_argument("--variant", choices=["fixed", "unfixed", "both"], default="both")
    variants.add_argument("--jobs", type=int, default=2)
    variants.add_argument("--force", action="store_true", help="rebuild even when cached")
    variants.set_defaults(func=cmd_build_variants)

    nvmet = sub.add_parser(
        "build-nvmet",
        help="build nvmet/nvmet-tcp with the test-only namespace visibility patch",
    )
    nvmet.add_argument("--release", help="kernel release (default: the prepared one)")
    nvmet.add_argument("--cache-dir", type=Path, help="default: build/modules")
    nvmet.add_argument(
        "--source-tarball",
        type=Path,
        help="default: /usr/src/linux-source-X.Y.tar.xz of the release's line",
    )
    nvmet.add_argument(
        "--patch", type=Path, help="default: patches/nvmet-ns-visibility/ (or its <line>/)"
    )
    nvmet.add_argument("--jobs", type=int, default=2)
    nvmet.add_argument("--force", action="store_true", help="rebuild even when cached")
    nvmet.add_argument(
        "--status", action="store_true", help="only say which nvmet is loaded (in the VM)"
    )
    nvmet.set_defaults(func=cmd_build_nvmet)

    nvmetcli = sub.add_parser(
        "fetch-nvmetcli",
        help="Debian's nvmetcli from sid, unpacked into build/tools/ (not installed; for "
        'target.backend = "nvmetcli" where the host has no nvmetcli package)',
    )
    nvmetcli.set_defaults(func=cmd_fetch_nvmetcli)

    rel = sub.add_parser(
        "releases", help="Debian kernel releases: packages, exact source, what the source says"
    )
    rel.add_argument("releases", nargs="*", help="release names (default: installed ones)")
    rel.add_argument("--fetch-source", action="store_true", help="download+unpack the source")
    rel.add_argument("--facts", action="store_true", help="print the source check (fetches)")
    rel.add_argument(
        "--source-version",
        help="fetch this version of the source package instead of the release's own (one "
        "release only; for a release whose own source apt has not got)",
    )
    rel.add_argument("--cache-dir", type=Path, help="default: build/kernel-sources")
    rel.set_defaults(func=cmd_releases)

    check = sub.add_parser(
        "check-source",
        help="what a kernel source says: the fix, bio_check_eod()'s shape, a prediction",
    )
    check.add_argument("source", help="a kernel source tree, or a linux-source-X.Y tarball")
    check.add_argument("--json", action="store_true", help="as JSON (fix, eod_shape, prediction)")
    check.set_defaults(func=cmd_check_source)

    tree = sub.add_parser(
        "build-kernel",
        help="build a kernel for the harness from a tree, stock and/or with the fix toggled",
    )
    tree.add_argument(
        "source",
        help="a git tree, a source directory, a linux-*.tar.* or debian:linux-source-X.Y[=V] "
        "(fetched from any Debian suite without touching the host's apt)",
    )
    tree.add_argument("--ref", default="", help="git ref to build (default HEAD: committed state)")
    tree.add_argument(
        "--patch",
        action="append",
        default=[],
        help="a patch (-p1) to apply; repeatable; a directory means its *.patch in name order",
    )
    which = tree.add_mutually_exclusive_group()
    which.add_argument(
        "--toggle-fix",
        action="store_true",
        help="only the variant with the fix toggled (reverted where the source has it)",
    )
    which.add_argument(
        "--both",
        action="store_true",
        help="two variants: as shipped (with the patches) and with the fix toggled",
    )
    tree.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    tree.add_argument("--json", action="store_true", help="one JSON record per variant")
    tree.set_defaults(func=cmd_build_kernel)


def cmd_kernel(args: argparse.Namespace) -> int:
    """``kernel choose|record|current|show|packages|host``: the plumbing scripts/setup uses.
    Exit 0, 1 when ``current`` finds the record's packages gone, 2 when nothing can be chosen
    or recorded, or the host is not a supported Debian."""
    from harness.kernels import hosts, prepared  # lazy: import cost (module docstring)

    if args.kernel_command == "host":
        debian = hosts.detect()
        print(
            f"{debian.name}: kernel under test linux-image-{debian.release_shape} with "
            f"linux-headers of the same release and {debian.source_package} of the same version"
        )
    elif args.kernel_command == "packages":
        print("\n".join(prepared.packages_of(args.release)))
    elif args.kernel_command == "choose":
        choice = prepared.choose(args.release)
        print(f"{choice.release}\t{choice.version}\t{choice.chosen_by}")
    elif args.kernel_command == "record":
        print(prepared.describe(prepared.record_installed(args.release, args.chosen_by)))
    elif args.kernel_command == "current":
        record = prepared.load()
        if not prepared.still_installed(record):
            return ExitCode.FAILED
        print(f"{record.release}\t{record.source_version}\t{record.chosen_by}")
    else:
        print(prepared.describe(prepared.load()))
    return ExitCode.OK


def cmd_build_variants(args: argparse.Namespace) -> int:
    """``build-variants``: one line per variant with its srcversion; exit 0, or 3 when a
    build fails."""
    from harness.kernels import kbuild, module_build, releases  # lazy: import cost

    tarball: Path | None = args.source_tarball
    if args.own_source:
        release = releases.lookup(args.release or module_build.default_release())
        tarball = releases.fetch_source(release).tarball
        print(f"source of {release.name}: {release.source_spec} ({tarball})", flush=True)
    variants = kbuild.VARIANTS if args.variant == "both" else (args.variant,)
    for variant in variants:
        built = kbuild.build_variant(
            variant,
            release=args.release,
            cache_dir=args.cache_dir,
            source_tarball=tarball,
            patch=args.patch,
            jobs=args.jobs,
            force=args.force,
        )
        how = "cached" if built.cached else f"built in {built.build_seconds:g} s"
        print(
            f"{built.variant} {built.release} nvme-core srcversion "
            f"{built.srcversion[kbuild.CORE_MODULE]} ({how}, patch {built.patch_action}"
            f"{' by toggle' if built.patch_method == 'toggle' else ''}"
            f"{', as shipped' if built.as_shipped else ''}) {built.module_dir}",
            flush=True,
        )
    return ExitCode.OK


def cmd_build_nvmet(args: argparse.Namespace) -> int:
    """``build-nvmet``: the build's srcversion and directory (``--status``: which nvmet is
    loaded); exit 0, or 3 when the build fails."""
    if args.status:
        from harness.bed import nvmet_modules  # lazy: import cost

        print(nvmet_modules.loaded_nvmet().describe())
        return ExitCode.OK
    from harness.kernels import nvmet_variant  # lazy: import cost

    built = nvmet_variant.build_nvmet(
        release=args.release,
        cache_dir=args.cache_dir,
        source_tarball=args.source_tarball,
        patch=args.patch,
        jobs=args.jobs,
        force=args.force,
    )
    how = "cached" if built.cached else f"built in {built.build_seconds:g} s"
    print(f"{nvmet_variant.VARIANT} {built.release} nvmet srcversion {built.srcversion} ({how})")
    print(built.module_dir)
    return ExitCode.OK


def cmd_fetch_nvmetcli(args: argparse.Namespace) -> int:
    """``fetch-nvmetcli``: one line with the version and the wrapper; exit 0, 2 when the
    mirror does not offer it, 3 when the download, unpack or check fails."""
    from harness.kernels import nvmetcli_tool  # lazy: import cost

    fetched = nvmetcli_tool.fetch_nvmetcli()
    how = "downloaded" if fetched.downloaded else "cached"
    print(
        f"nvmetcli {fetched.version} (Debian sid, {how}, {fetched.verified_by}, not "
        f"installed): {fetched.wrapper}"
    )
    return ExitCode.OK


def cmd_releases(args: argparse.Namespace) -> int:
    """``releases``: per release one line (packages, source), with ``--facts`` what its own
    source says. Exit 0, or 3 when one release failed (the others still run)."""
    from harness.kernels import releases  # lazy: import cost

    if args.source_version and len(args.releases) != 1:
        raise UsageError("--source-version needs exactly one release")
    status = ExitCode.OK
    for name in args.releases or releases.installed_releases():
        try:
            release = releases.lookup(name)
            if args.source_version:
                release = releases.with_source_version(release, args.source_version)
            print(releases.describe(release), flush=True)
            if args.fetch_source or args.facts:
                fetched = releases.fetch_source(release, args.cache_dir)
                how = "downloaded" if fetched.downloaded else "cached"
                print(f"  source {fetched.tarball} ({how})", flush=True)
                if args.facts:
                    facts = releases.source_facts(fetched.tarball)
                    print(
                        f"  {facts.version}: fix in source {facts.has_fix}, bio_check_eod() "
                        f"{facts.eod_shape}: {facts.prediction}",
                        flush=True,
                    )
        except HarnessError as exc:
            print(f"{PROG}: {name}: {exc}", file=sys.stderr, flush=True)
            status = ExitCode.INFRA
    return status


def cmd_check_source(args: argparse.Namespace) -> int:
    """``check-source SOURCE``: one line (``--json``: the fields) with the fix, the shape of
    bio_check_eod() and the prediction. Exit 0 for a known shape; a shape it does not know
    is one line and exit 1 (no prediction); a SOURCE that is not a kernel source exits 2."""
    from harness.kernels import source_check  # lazy: import cost

    path = Path(args.source)
    try:
        check = source_check.check_source(path)
    except source_check.UnknownSource as exc:
        if args.json:
            print(json.dumps({"source": str(path), "prediction": None, "unknown": str(exc)}))
        else:
            print(f"{path}: no prediction: {exc}")
        return ExitCode.FAILED
    print(json.dumps(check.to_dict(), indent=2) if args.json else check.describe())
    return ExitCode.OK


def patch_files(given: list[str]) -> tuple[Path, ...]:
    """``--patch`` values as files: a directory gives its *.patch in name order."""
    files: list[Path] = []
    for item in given:
        path = Path(item)
        files += sorted(path.glob("*.patch")) if path.is_dir() else [path]
    return tuple(files)


def cmd_build_kernel(args: argparse.Namespace) -> int:
    """``build-kernel SOURCE``: one line per variant (kdir, release, prediction); exit 0,
    2 for a bad source or patch or a missing build tool, 3 when a build fails."""
    from harness.kernels import tree_build  # lazy: import cost (module docstring)

    if args.source.startswith("debian:"):
        from harness.kernels import debian_archive  # lazy: import cost (module docstring)

        fetched = debian_archive.fetch_source(args.source.removeprefix("debian:"))
        how = "downloaded" if fetched.downloaded else "cached"
        say(f"{fetched.package} {fetched.version}: {fetched.tarball} ({how})")
        source = tree_build.tarball_source(fetched.tarball, f"{fetched.package}_{fetched.version}")
    else:
        source = tree_build.resolve_source(args.source, args.ref)
    patches = patch_files(args.patch)
    variants = []
    if not args.toggle_fix:
        variants.append(tree_build.TreeVariant("as-shipped", patches, False))
    if args.toggle_fix or args.both:
        variants.append(tree_build.TreeVariant("fix-toggled", patches, True))
    for variant in variants:
        built = tree_build.build_tree(source, variant, jobs=args.jobs, say=say)
        if args.json:
            print(json.dumps(json.loads(built.to_json())), flush=True)
        else:
            how = "cached" if built.cached else f"built in {built.build_seconds:.0f} s"
            print(f"{built.variant} {built.release} ({built.prediction}; {how}) {built.kdir}")
    return ExitCode.OK
