"""The commands that look after the machine and the harness: ``clean`` (leftovers of
earlier runs), ``doctor`` (what is installed, whether KVM works), ``remote`` (nvmf-harness on
another machine over SSH) and the VM runner's self-tests (``selftest-crash``,
``selftest-kvm-fallback``).

``remote``, ``doctor`` and the self-tests import their modules when they run, not at the
top: SSH (paramiko) alone costs ~60 ms, and ``nvmf-harness --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shlex
import sys
from pathlib import Path

from harness.bed import cleanup
from harness.cli.errors import usage_error
from harness.cli.options import add_vm_options, vm_options
from harness.core.console import PROG, say
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.kernelfs import KernelFs


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``clean``, ``doctor``, ``remote``, ``selftest-crash`` and
    ``selftest-kvm-fallback``."""
    clean = sub.add_parser("clean", help="remove leftovers of earlier runs")
    clean.add_argument("--dry-run", action="store_true", help="only list them")
    clean.set_defaults(func=cmd_clean)
    doctor = sub.add_parser("doctor", help="check that everything needed is installed")
    doctor.add_argument(
        "--test-kvm",
        action="store_true",
        help="boot the prepared kernel under KVM with a trivial command (about a minute at "
        "most) and remember whether KVM works here",
    )
    doctor.set_defaults(func=cmd_doctor)
    _add_remote(sub)
    selftest = sub.add_parser("selftest-crash", help="check the VM runner's crash handling")
    selftest.add_argument("--out", required=True)
    add_vm_options(selftest)
    selftest.set_defaults(func=cmd_selftest_crash)
    fallback = sub.add_parser(
        "selftest-kvm-fallback",
        help="check that a KVM that cannot run the guest is followed by a TCG boot",
    )
    fallback.add_argument("--out", required=True)
    add_vm_options(fallback)
    fallback.set_defaults(func=cmd_selftest_kvm_fallback)


def _add_remote(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rem = sub.add_parser(
        "remote", help="run nvmf-harness ARGS on another machine over SSH, fetch results"
    )
    rem.add_argument("--host", required=True, help="SSH server name or address")
    rem.add_argument("--port", type=int, default=22)
    rem.add_argument("--user", help="remote user (default: the local user name)")
    rem.add_argument("--key", help="private key file (default: ssh-agent, ~/.ssh/id_*)")
    rem.add_argument("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)")
    rem.add_argument(
        "--trust-new-host-key",
        action="store_true",
        help="accept an unknown host key and save it to known_hosts (a changed key is "
        "still refused)",
    )
    rem.add_argument(
        "--repo",
        default="nvmf-mpath-harness",
        help="the harness checkout on the remote, with its .venv; the command runs there and "
        "relative paths in ARGS and --fetch are relative to it (default: ~/nvmf-mpath-harness)",
    )
    rem.add_argument(
        "--fetch", metavar="REMOTE_DIR:LOCAL_DIR", help="copy this directory back afterwards"
    )
    rem.add_argument(
        "--timeout", type=float, help="seconds before the remote command is cut (default: 4 h)"
    )
    rem.add_argument("--connect-timeout", type=float, default=15.0)
    rem.add_argument("harness_args", nargs=argparse.REMAINDER, help="-- nvmf-harness arguments")
    rem.set_defaults(func=cmd_remote)


def cmd_clean(args: argparse.Namespace) -> int:
    """``clean``: remove (``--dry-run``: list) what earlier runs left; exit 1 when some of
    it is still there."""
    kfs = KernelFs()
    if args.dry_run:
        found = cleanup.find_all(kfs)
        for item in found:
            print(item)
        say(f"{len(found)} leftover(s)")
        return ExitCode.FAILED if found else ExitCode.OK
    if os.geteuid() != 0:
        raise HarnessError("clean needs root")
    report = cleanup.clean_all(kfs)
    for item in report.found:
        print(f"removed: {item}")
    for error in report.errors:
        print(f"error: {error}")
    left = cleanup.find_all(kfs)
    for item in left:
        print(f"still there: {item}")
    say(f"{len(report.found)} leftover(s) found, {len(left)} remain")
    return ExitCode.FAILED if left else ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: every check, one line each; exit 2 when a required one failed."""
    from harness.vm.doctor import retest_kvm, run_checks  # lazy: import cost (module docstring)

    if args.test_kvm:
        retest_kvm(say)
    checks = run_checks()
    for check in checks:
        mark = "ok  " if check.ok else ("warn" if check.optional else "FAIL")
        line = f"{mark} {check.name}: {check.detail}"
        if not check.ok and check.fix:
            line += f" -> {check.fix}"
        print(line)
    failed = [c for c in checks if not c.ok and not c.optional]
    say("all required checks passed" if not failed else f"{len(failed)} required check(s) failed")
    return ExitCode.USAGE if failed else ExitCode.OK


def cmd_remote(args: argparse.Namespace) -> int:
    """Run nvmf-harness ARGS in a checkout on another machine over SSH; fetch its results.

    The command runs in the checkout (--repo), so relative paths in ARGS and --fetch's
    REMOTE_DIR mean the same directory. Returns the remote exit status (3 when it has none
    or the fetch failed), 2 for missing arguments.
    """
    # lazy: import cost (module docstring)
    from harness.vm.remote import DEFAULT_COMMAND_TIMEOUT_S, DEFAULT_KNOWN_HOSTS, RemoteHost

    harness_args = list(args.harness_args)
    if harness_args[:1] == ["--"]:
        harness_args = harness_args[1:]
    if not harness_args:
        return usage_error(
            "nothing to run: give the nvmf-harness arguments after --, "
            "e.g. -- vm --config configs/smoke.toml --out out/smoke"
        )
    fetch: tuple[str, str] | None = None
    if args.fetch:
        remote_dir, _, local_dir = args.fetch.partition(":")
        if not remote_dir or not local_dir:
            return usage_error(f"--fetch {args.fetch!r}: give REMOTE_DIR:LOCAL_DIR")
        fetch = (posixpath.join(args.repo, remote_dir), local_dir)
    remote = RemoteHost(
        host=args.host,
        port=args.port,
        user=args.user,
        key_filename=args.key,
        known_hosts=Path(args.known_hosts) if args.known_hosts else DEFAULT_KNOWN_HOSTS,
        trust_new_host_key=args.trust_new_host_key,
        connect_timeout_s=args.connect_timeout,
        command_timeout_s=args.timeout or DEFAULT_COMMAND_TIMEOUT_S,
    )
    argv = [posixpath.join(".venv", "bin", PROG), *harness_args]
    with remote:
        if remote.trusted_new_key:
            say(f"trusted a new host key and saved it: {remote.trusted_new_key}")
        say(f"on {remote.target} in {args.repo}: {shlex.join(argv)}")
        result = remote.run(
            argv,
            cwd=args.repo,
            on_line=lambda line: print(line, flush=True),
            on_stderr_line=lambda line: print(line, file=sys.stderr, flush=True),
        )
        status = result.returncode if result.returncode >= 0 else ExitCode.INFRA
        say(f"remote exit status {result.returncode}")
        if fetch is not None:
            try:
                fetched = remote.fetch_dir(*fetch)
            except HarnessError as exc:
                print(f"{PROG}: error: fetch failed: {exc}", file=sys.stderr)
                return status or ExitCode.INFRA
            for skipped in fetched.skipped:
                say(f"skipped {skipped}")
            say(f"fetched {len(fetched.files)} file(s) from {args.host}:{fetch[0]} to {fetch[1]}")
    return status


def cmd_selftest_crash(args: argparse.Namespace) -> int:
    """``selftest-crash``: the guest panics, the runner must record it; exit 1 on a
    problem."""
    from harness.vm import campaigns  # lazy: import cost (module docstring)
    from harness.vm.selftest import crash_selftest

    outdir = campaigns.fresh_outdir(Path(args.out))
    problems = crash_selftest(campaigns.vm_spec(vm_options(args), 300), outdir)
    for problem in problems:
        say(f"crash self-test: {problem}")
    if not problems:
        say(
            "crash self-test passed: the guest panicked, the runner recorded kernel_crash, "
            "earlier records are intact"
        )
    return ExitCode.FAILED if problems else ExitCode.OK


def cmd_selftest_kvm_fallback(args: argparse.Namespace) -> int:
    """``selftest-kvm-fallback``: a KVM boot that fails must be followed by a TCG boot;
    exit 1 on a problem."""
    from harness.vm import campaigns  # lazy: import cost (module docstring)
    from harness.vm.selftest import kvm_fallback_selftest

    outdir = campaigns.fresh_outdir(Path(args.out))
    problems, happened = kvm_fallback_selftest(campaigns.vm_spec(vm_options(args), 600), outdir)
    for problem in problems:
        say(f"KVM fallback self-test: {problem}")
    if not problems:
        say(f"KVM fallback self-test {happened}")
    return ExitCode.FAILED if problems else ExitCode.OK
