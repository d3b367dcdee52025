"""harness.vm.remote against a real SSH server: paramiko's server side on 127.0.0.1.

The test server accepts one client key (publickey only), runs exec requests the way sshd
does (``/bin/sh -c COMMAND``, so a badly quoted command would really run its ``;`` part),
and serves SFTP from the local file system. Nothing of paramiko's client is mocked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest

from harness.cli import app as cli
from harness.core.errors import ToolError
from harness.core.exits import ExitCode
from harness.vm.remote import RemoteError, RemoteHost, fingerprint, known_hosts_name

PASSPHRASE = "Hunter2-secret-PASSPHRASE"
WRONG_PASSPHRASE = "not-the-right-one-XYZZY"


# --- the test server -----------------------------------------------------------------------------


@dataclass
class ServerState:
    """What the server accepts, and what it saw."""

    client_key: Any
    password_attempts: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    # Extra SFTP directory entries to list, per directory: for hostile-server tests.
    fake_entries: dict[str, list[Any]] = field(default_factory=dict)


class _Server(paramiko.ServerInterface):  # type: ignore[misc]
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: Any) -> int:
        ok = key == self.state.client_key
        return int(paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED)

    def check_auth_password(self, username: str, password: str) -> int:
        self.state.password_attempts.append(username)
        return int(paramiko.AUTH_FAILED)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return int(paramiko.OPEN_SUCCEEDED)
        return int(paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)

    def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
        text = command.decode()
        self.state.commands.append(text)
        threading.Thread(target=_exec, args=(channel, text), daemon=True).start()
        return True


def _pump(fd: int, send: Any) -> None:
    while chunk := os.read(fd, 4096):
        try:
            send(chunk)
        except (OSError, EOFError, paramiko.SSHException):
            return


def _exec(channel: Any, command: str) -> None:
    """Run the command as sshd would (through a shell); kill it when the channel closes."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # so a kill reaches the shell's children too
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout.fileno(), channel.sendall), daemon=True),
        threading.Thread(
            target=_pump, args=(proc.stderr.fileno(), channel.sendall_stderr), daemon=True
        ),
    ]
    for pump in pumps:
        pump.start()
    while proc.poll() is None:
        if channel.closed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.02)
    for pump in pumps:
        pump.join(5)
    proc.stdout.close()
    proc.stderr.close()
    if not channel.closed:
        channel.send_exit_status(proc.returncode)
        channel.close()


class _Sftp(paramiko.SFTPServerInterface):  # type: ignore[misc]
    """Read-only SFTP of the local file system (lstat-style directory listings, as sshd)."""

    def __init__(self, server: _Server, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.state = server.state

    def list_folder(self, path: str) -> Any:
        try:
            entries = [
                paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(path, name)), name)
                for name in os.listdir(path)
            ]
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return entries + self.state.fake_entries.get(path, [])

    def stat(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def lstat(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.lstat(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def open(self, path: str, flags: int, attr: Any) -> Any:
        if flags & (os.O_WRONLY | os.O_RDWR):
            return paramiko.SFTP_PERMISSION_DENIED
        try:
            handle = paramiko.SFTPHandle(flags)
            handle.filename = path
            handle.readfile = open(path, "rb")  # noqa: SIM115 - closed by SFTPHandle.close
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return handle


class SshServer:
    """paramiko's server side, one thread per connection, on 127.0.0.1:<random port>."""

    def __init__(self, host_key: Any, state: ServerState) -> None:
        self.host_key = host_key
        self.state = state
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.transports: list[Any] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        self.transports.append(transport)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Sftp)
        # A client that rejects the host key just hangs up: that ends negotiation here.
        with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
            transport.start_server(server=_Server(self.state))

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.thread.join(5)
        for transport in self.transports:
            transport.close()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_key() -> Any:
    return paramiko.RSAKey.generate(2048)


@pytest.fixture(scope="module")
def client_key() -> Any:
    return paramiko.RSAKey.generate(2048)


@pytest.fixture
def server(host_key: Any, client_key: Any) -> Iterator[SshServer]:
    srv = SshServer(host_key, ServerState(client_key))
    yield srv
    srv.stop()


@pytest.fixture
def key_file(tmp_path: Path, client_key: Any) -> Path:
    path = tmp_path / "id_rsa"
    client_key.write_private_key_file(str(path))
    return path


@pytest.fixture
def known_hosts(tmp_path: Path, server: SshServer) -> Path:
    """A known_hosts file that already trusts the test server."""
    path = tmp_path / "known_hosts"
    name = known_hosts_name("127.0.0.1", server.port)
    path.write_text(f"{name} {server.host_key.get_name()} {server.host_key.get_base64()}\n")
    return path


def remote_for(server: SshServer, key_file: Path, known_hosts: Path, **kwargs: Any) -> RemoteHost:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "user": "tester",
        "key_filename": str(key_file),
        "known_hosts": known_hosts,
        "allow_agent": False,
        "look_for_keys": False,
        "connect_timeout_s": 10.0,
    }
    settings.update(kwargs)
    return RemoteHost(**settings)


@pytest.fixture
def remote(server: SshServer, key_file: Path, known_hosts: Path) -> Iterator[RemoteHost]:
    with remote_for(server, key_file, known_hosts) as connected:
        yield connected


# --- host keys -----------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_by_default(
    server: SshServer, key_file: Path, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"
    with pytest.raises(RemoteError) as caught:
        remote_for(server, key_file, known_hosts).connect()
    message = str(caught.value)
    assert "\n" not in message
    assert "--trust-new-host-key" in message
    assert fingerprint(server.host_key) in message
    assert not known_hosts.exists()
    assert server.state.commands == []


def test_unknown_host_key_is_refused_with_an_existing_file(
    server: SshServer, key_file: Path, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("otherhost ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7\n")
    before = known_hosts.read_text()
    with pytest.raises(RemoteError, match="trust-new-host-key"):
        remote_for(server, key_file, known_hosts).connect()
    assert known_hosts.read_text() == before


def test_trust_new_host_key_accepts_and_saves_then_strict_connect_works(
    server: SshServer, key_file: Path, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"
    with remote_for(server, key_file, known_hosts, trust_new_host_key=True) as remote:
        assert remote.run(["true"]).returncode == 0
        assert remote.trusted_new_key is not None
        assert fingerprint(server.host_key) in remote.trusted_new_key
    name = f"[127.0.0.1]:{server.port}"
    lines = known_hosts.read_text().splitlines()
    assert lines == [f"{name} ssh-rsa {server.host_key.get_base64()}"]
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    assert stat.S_IMODE(known_hosts.parent.stat().st_mode) == 0o700
    # Now known: the strict default connects, and saves nothing more.
    with remote_for(server, key_file, known_hosts) as remote:
        assert remote.run(["echo", "hi"]).stdout == "hi\n"
        assert remote.trusted_new_key is None
    assert known_hosts.read_text().splitlines() == lines


def test_trust_appends_after_a_last_line_without_newline(
    server: SshServer, key_file: Path, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    other = paramiko.RSAKey.generate(1024)
    known_hosts.write_text(f"otherhost ssh-rsa {other.get_base64()}")
    with remote_for(server, key_file, known_hosts, trust_new_host_key=True):
        pass
    lines = known_hosts.read_text().splitlines()
    assert lines[0] == f"otherhost ssh-rsa {other.get_base64()}"
    assert lines[1].startswith(f"[127.0.0.1]:{server.port} ssh-rsa ")


@pytest.mark.parametrize("trust", [False, True])
def test_changed_host_key_is_refused_even_with_trust(
    server: SshServer, key_file: Path, tmp_path: Path, trust: bool
) -> None:
    known_hosts = tmp_path / "known_hosts"
    old_key = paramiko.RSAKey.generate(1024)
    known_hosts.write_text(f"[127.0.0.1]:{server.port} ssh-rsa {old_key.get_base64()}\n")
    before = known_hosts.read_text()
    with pytest.raises(RemoteError) as caught:
        remote_for(server, key_file, known_hosts, trust_new_host_key=trust).connect()
    message = str(caught.value)
    assert "\n" not in message
    assert "CHANGED" in message
    assert fingerprint(server.host_key) in message and fingerprint(old_key) in message
    assert known_hosts.read_text() == before
    assert server.state.commands == []


def test_known_key_of_another_type_is_a_changed_key(
    server: SshServer, key_file: Path, tmp_path: Path
) -> None:
    """known_hosts has an ECDSA key for the host, the server offers RSA: refused, not added."""
    known_hosts = tmp_path / "known_hosts"
    ecdsa = paramiko.ECDSAKey.generate()
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {ecdsa.get_name()} {ecdsa.get_base64()}\n")
    before = known_hosts.read_text()
    with pytest.raises(RemoteError, match="CHANGED"):
        remote_for(server, key_file, known_hosts, trust_new_host_key=True).connect()
    assert known_hosts.read_text() == before


def test_hashed_known_hosts_entry_is_accepted(
    server: SshServer, key_file: Path, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host(f"[127.0.0.1]:{server.port}")
    known_hosts.write_text(f"{hashed} ssh-rsa {server.host_key.get_base64()}\n")
    with remote_for(server, key_file, known_hosts) as remote:
        assert remote.run(["true"]).ok


# --- authentication and secrets ------------------------------------------------------------------


def test_wrong_client_key_fails_with_one_line_and_no_password_attempt(
    server: SshServer, known_hosts: Path, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(stranger))
    with pytest.raises(RemoteError) as caught:
        remote_for(server, stranger, known_hosts).connect()
    assert "authentication" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert server.state.password_attempts == []


def test_missing_key_file_and_closed_port(
    server: SshServer, known_hosts: Path, tmp_path: Path
) -> None:
    with pytest.raises(RemoteError, match="not found"):
        remote_for(server, tmp_path / "nope", known_hosts).connect()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    key = tmp_path / "k"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(key))
    remote = RemoteHost(host="127.0.0.1", port=port, key_filename=str(key), known_hosts=known_hosts)
    with pytest.raises(RemoteError, match="cannot connect"):
        remote.connect()


def test_passphrase_never_shown(
    server: SshServer,
    known_hosts: Path,
    tmp_path: Path,
    client_key: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    encrypted = tmp_path / "id_rsa_encrypted"
    client_key.write_private_key_file(str(encrypted), password=PASSPHRASE)
    remote = remote_for(server, encrypted, known_hosts, passphrase=PASSPHRASE)
    assert PASSPHRASE not in repr(remote) and PASSPHRASE not in str(remote)
    with remote:
        assert remote.run(["echo", "unlocked"]).stdout == "unlocked\n"
        assert PASSPHRASE not in repr(remote)

    wrong = remote_for(server, encrypted, known_hosts, passphrase=WRONG_PASSPHRASE)
    with pytest.raises(RemoteError) as caught:
        wrong.connect()
    missing = remote_for(server, encrypted, known_hosts)
    with pytest.raises(RemoteError) as caught_missing:
        missing.connect()
    messages = [str(caught.value), repr(caught.value), str(caught_missing.value), caplog.text]
    for text in messages:
        assert PASSPHRASE not in text
        assert WRONG_PASSPHRASE not in text
    assert "\n" not in str(caught.value)
    assert server.state.password_attempts == []


# --- run -----------------------------------------------------------------------------------------


def test_run_returns_output_and_exit_status(remote: RemoteHost) -> None:
    lines: list[str] = []
    errors: list[str] = []
    script = "echo one; echo two; echo oops >&2; printf tail; exit 3"
    result = remote.run(["sh", "-c", script], on_line=lines.append, on_stderr_line=errors.append)
    assert result.returncode == 3
    assert result.stdout == "one\ntwo\ntail"
    assert result.stderr == "oops\n"
    assert lines == ["one", "two", "tail"]
    assert errors == ["oops"]
    assert result.argv == ("sh", "-c", script)


def test_run_quotes_every_argument(remote: RemoteHost, server: SshServer, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    literal = f"a b; touch {pwned}"
    result = remote.run(["echo", literal])
    assert result.stdout == literal + "\n"
    assert result.returncode == 0
    assert not pwned.exists()
    # The server got one shell-quoted string that splits back into the same arguments.
    assert shlex.split(server.state.commands[-1]) == ["echo", literal]

    tricky = [
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        "it's",
        '"double"',
        "$HOME",
        "new\nline",
        "*",
        "",
        "--flag",
    ]
    result = remote.run(["printf", "%s|", *tricky])
    assert result.stdout == "".join(f"{arg}|" for arg in tricky)
    assert not pwned.exists()


def test_run_in_a_directory(remote: RemoteHost, tmp_path: Path) -> None:
    odd = tmp_path / "dir with space; and $(x)"
    odd.mkdir()
    result = remote.run(["pwd"], cwd=str(odd))
    assert result.stdout == f"{odd}\n"
    assert result.argv == ("pwd",)


def test_run_rejects_bad_argv(remote: RemoteHost) -> None:
    with pytest.raises(ValueError):
        remote.run([])
    with pytest.raises(ValueError):
        remote.run(["echo", "a\0b"])


def test_run_timeout_closes_channel_and_raises(remote: RemoteHost, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not finish in 1 s"):
        remote.run(["sleep", "30"], timeout_s=1.0)
    assert time.monotonic() - started < 5
    # The connection is still usable afterwards.
    assert remote.run(["echo", "after"]).stdout == "after\n"


def test_run_timeout_while_output_keeps_coming(remote: RemoteHost) -> None:
    started = time.monotonic()
    lines: list[str] = []
    with pytest.raises(ToolError):
        remote.run(
            ["sh", "-c", "for i in $(seq 200); do echo tick; sleep 0.05; done"],
            timeout_s=1.0,
            on_line=lines.append,
        )
    assert time.monotonic() - started < 5
    assert lines and set(lines) == {"tick"}


def test_run_needs_a_connection(server: SshServer, key_file: Path, known_hosts: Path) -> None:
    with pytest.raises(RemoteError, match="not connected"):
        remote_for(server, key_file, known_hosts).run(["true"])


# --- fetch_dir -----------------------------------------------------------------------------------


def _make_tree(root: Path) -> None:
    (root / "iterations" / "0001").mkdir(parents=True)
    (root / "results.jsonl").write_text('{"iteration": 1}\n')
    (root / "iterations" / "0001" / "kmsg.txt").write_text("kernel line\n")
    (root / "empty").mkdir()
    (root / "big.bin").write_bytes(os.urandom(300_000))


def test_fetch_dir_copies_a_tree(remote: RemoteHost, tmp_path: Path) -> None:
    source = tmp_path / "remote" / "out"
    _make_tree(source)
    (source / "abs-link").symlink_to("/etc/passwd")
    (source / "rel-link").symlink_to("results.jsonl")
    os.mkfifo(source / "fifo")
    dest = tmp_path / "local" / "out"
    result = remote.fetch_dir(str(source), dest)
    copied = sorted(str(p.relative_to(dest)) for p in result.files)
    assert copied == ["big.bin", "iterations/0001/kmsg.txt", "results.jsonl"]
    for name in copied:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    assert (dest / "empty").is_dir()
    assert not (dest / "abs-link").exists() and not (dest / "abs-link").is_symlink()
    assert not (dest / "rel-link").exists() and not (dest / "fifo").exists()
    assert len(result.skipped) == 3
    assert any("abs-link" in s and "symlink" in s for s in result.skipped)


def test_fetch_dir_refuses_dotdot_names(
    remote: RemoteHost, server: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "remote" / "out"
    _make_tree(source)
    (source.parent / "escaped.txt").write_text("outside the tree\n")
    attrs = paramiko.SFTPAttributes.from_stat(os.stat(source.parent / "escaped.txt"))
    attrs.filename = "../escaped.txt"
    server.state.fake_entries[str(source)] = [attrs]
    local = tmp_path / "local"
    dest = local / "out"
    with pytest.raises(RemoteError) as caught:
        remote.fetch_dir(str(source), dest)
    assert "../escaped.txt" in str(caught.value)
    assert not (local / "escaped.txt").exists()
    assert list(dest.iterdir()) == []


def test_fetch_dir_refuses_slash_names(
    remote: RemoteHost, server: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "remote" / "out"
    _make_tree(source)
    attrs = paramiko.SFTPAttributes.from_stat(os.stat(source / "results.jsonl"))
    attrs.filename = str(tmp_path / "absolute.txt")
    server.state.fake_entries[str(source / "iterations")] = [attrs]
    with pytest.raises(RemoteError, match="not a plain file name"):
        remote.fetch_dir(str(source), tmp_path / "local")
    assert not (tmp_path / "absolute.txt").exists()


def test_fetch_dir_never_writes_through_a_local_symlink(remote: RemoteHost, tmp_path: Path) -> None:
    source = tmp_path / "remote" / "out"
    _make_tree(source)
    dest = tmp_path / "local"
    dest.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (dest / "results.jsonl").symlink_to(victim)
    with pytest.raises(RemoteError, match="outside"):
        remote.fetch_dir(str(source), dest)
    assert victim.read_text() == "keep me\n"


def test_fetch_dir_missing_remote_dir(remote: RemoteHost, tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="nothing fetched"):
        remote.fetch_dir(str(tmp_path / "nope"), tmp_path / "local")


# --- the CLI -------------------------------------------------------------------------------------


def _fake_repo(root: Path) -> Path:
    """A 'remote checkout' whose .venv/bin/nvmf-harness writes a results directory."""
    script = root / ".venv" / "bin" / "nvmf-harness"
    script.parent.mkdir(parents=True)
    script.write_text(
        "#!/bin/sh\n"
        'echo "remote harness: $*"\n'
        'echo "a warning" >&2\n'
        'mkdir -p "$3/iterations/0001"\n'
        'echo "{}" > "$3/results.jsonl"\n'
        'echo "kmsg" > "$3/iterations/0001/kmsg.txt"\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    return root


def test_cli_remote_runs_streams_and_fetches(
    server: SshServer,
    key_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _fake_repo(tmp_path / "remote repo")
    remote_out = repo / "out" / "smoke"  # given relative to the checkout below
    local_out = tmp_path / "local-out"
    known_hosts = tmp_path / "kh"
    common = ["remote", "--host", "127.0.0.1", "--port", str(server.port), "--key", str(key_file)]
    common += ["--known-hosts", str(known_hosts), "--repo", str(repo)]
    harness_args = ["--", "vm", "--out", "out/smoke"]

    status = cli.main([*common, *harness_args])
    captured = capsys.readouterr()
    assert status == ExitCode.INFRA
    assert "--trust-new-host-key" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not remote_out.exists()
    assert server.state.commands == []

    fetch = ["--fetch", f"out/smoke:{local_out}"]
    status = cli.main([*common, "--trust-new-host-key", *fetch, *harness_args])
    captured = capsys.readouterr()
    assert status == 1  # the remote harness's exit status
    assert "remote harness: vm --out out/smoke" in captured.out
    assert "a warning" in captured.err
    assert (remote_out / "results.jsonl").exists()
    assert (local_out / "results.jsonl").read_text() == "{}\n"
    assert (local_out / "iterations" / "0001" / "kmsg.txt").read_text() == "kmsg\n"
    assert server.state.commands == [
        shlex.join(["env", "-C", str(repo), "--", ".venv/bin/nvmf-harness", *harness_args[1:]])
    ]
    assert known_hosts.exists()


def test_cli_remote_needs_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["remote", "--host", "127.0.0.1", "--"]) == ExitCode.USAGE
    assert "nothing to run" in capsys.readouterr().err
    assert cli.main(["remote", "--host", "h", "--fetch", "nocolon", "--", "doctor"]) != 0
    assert "--fetch" in capsys.readouterr().err
