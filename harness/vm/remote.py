"""Run the harness on another machine over SSH (paramiko), and fetch its results.

Host keys are checked strictly: the server's key must be in the known_hosts file. An unknown
key is refused unless ``trust_new_host_key`` is set, and then it is saved to that file; a key
that differs from the known one is always refused. Authentication is by key only (a key file,
ssh-agent, or paramiko's default ~/.ssh keys); no password is ever sent or asked for.

The remote command is built from an argument list with ``shlex.join``: the remote shell sees
every argument quoted, so spaces, ``;``, ``$(...)`` reach the program literally.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import shlex
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko

from harness.core.errors import HarnessError, ToolError
from harness.core.procs import ProcResult

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SSH_PORT = 22
DEFAULT_COMMAND_TIMEOUT_S = 4 * 3600.0
# How long one wait for output lasts before the deadline is checked again.
POLL_S = 0.1
CHUNK = 32768
# Longest part of an error message taken from paramiko or the server.
MAX_DETAIL = 300

LineCallback = Callable[[str], None]


class RemoteError(HarnessError):
    """Connecting, authenticating, or copying files over SSH failed."""


class _UnknownHostKeyError(paramiko.SSHException):  # type: ignore[misc]
    """The server's key is not in known_hosts (raised by the strict policy)."""

    def __init__(self, hostname: str, key: Any) -> None:
        super().__init__(f"{hostname} not found in known_hosts")
        self.hostname = hostname
        self.key = key


class _StrictPolicy(paramiko.RejectPolicy):  # type: ignore[misc]
    """paramiko's RejectPolicy, raising an error that carries the key's fingerprint."""

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise _UnknownHostKeyError(hostname, key)


class _TrustNewKeyPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Accept a key for a host that known_hosts does not know at all, and append it there.

    paramiko calls a policy only when known_hosts holds no key of any type for the host; a
    different key (or type) raises BadHostKeyException before any policy runs.
    """

    def __init__(self, known_hosts: Path, on_added: Callable[[str], None]) -> None:
        self.known_hosts = known_hosts
        self.on_added = on_added

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        _append_known_host(self.known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.on_added(f"{hostname} {key.get_name()} {fingerprint(key)}")


def fingerprint(key: Any) -> str:
    """The key's fingerprint as OpenSSH prints it: ``SHA256:<base64>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _append_known_host(path: Path, hostname: str, key: Any) -> None:
    """Append one known_hosts line; create the file (0600) and its directory (0700) if needed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        size = os.fstat(fd).st_size
        needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        os.write(fd, (("\n" if needs_newline else "") + line).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def known_hosts_name(host: str, port: int) -> str:
    """The name a host has in known_hosts: ``host``, or ``[host]:port`` off port 22."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


@dataclass(frozen=True)
class FetchResult:
    """What fetch_dir copied, and what it left alone (symlinks, devices, sockets)."""

    files: list[Path]
    skipped: list[str]


class _Lines:
    """Collects a byte stream, calling back once per complete line."""

    def __init__(self, on_line: LineCallback | None) -> None:
        self.on_line = on_line
        self.data = bytearray()
        self.partial = b""

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        if self.on_line is None:
            return
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            self.on_line(line.decode(errors="replace"))

    def finish(self) -> str:
        if self.on_line is not None and self.partial:
            self.on_line(self.partial.decode(errors="replace"))
            self.partial = b""
        return self.data.decode(errors="replace")


@dataclass
class RemoteHost:
    """One SSH connection: ``with RemoteHost(host=...) as remote: remote.run([...])``.

    ``passphrase`` unlocks an encrypted key file; it is left out of repr()/str() and out of
    every error message. Prefer ssh-agent for encrypted keys.
    """

    host: str
    port: int = SSH_PORT
    user: str | None = None
    key_filename: str | None = None
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    trust_new_host_key: bool = False
    connect_timeout_s: float = 15.0
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    io_timeout_s: float = 60.0  # longest wait for one SFTP reply
    allow_agent: bool = True
    look_for_keys: bool = True
    passphrase: str | None = field(default=None, repr=False, compare=False)
    # Set by connect() when a new host key was accepted and saved: "name type fingerprint".
    trusted_new_key: str | None = field(default=None, init=False, compare=False)
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise RemoteError(f"invalid host name {self.host!r}")
        if not 0 < self.port < 65536:
            raise RemoteError(f"invalid port {self.port}")
        for name in ("connect_timeout_s", "command_timeout_s", "io_timeout_s"):
            if getattr(self, name) <= 0:
                raise RemoteError(f"{name} must be positive")

    @property
    def target(self) -> str:
        """``user@host:port`` for messages."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"

    # --- connection ------------------------------------------------------------------------

    def __enter__(self) -> RemoteHost:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> RemoteHost:
        """Open the connection (checks the host key, authenticates); returns self."""
        if self._client is not None:
            return self
        known_hosts = self.known_hosts.expanduser()
        pkey = None if self.key_filename is None else self._load_key()
        client = paramiko.SSHClient()
        try:
            if known_hosts.exists():
                try:
                    client.load_host_keys(str(known_hosts))
                except (OSError, paramiko.SSHException, ValueError) as exc:
                    raise RemoteError(
                        f"cannot read {known_hosts}: {self._detail(exc)}",
                        hint="fix or move the file",
                    ) from None
            if self.trust_new_host_key:
                client.set_missing_host_key_policy(
                    _TrustNewKeyPolicy(known_hosts, self._note_trusted)
                )
            else:
                client.set_missing_host_key_policy(_StrictPolicy())
            client.connect(
                hostname=self.host,
                port=self.port,
                username=self.user,
                password=None,  # never: key-based auth only
                pkey=pkey,  # loaded here: the passphrase goes no further
                allow_agent=self.allow_agent,
                look_for_keys=self.look_for_keys,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
                channel_timeout=self.connect_timeout_s,
            )
        except BaseException as exc:
            client.close()
            if isinstance(exc, RemoteError):
                raise
            error = self._connect_error(exc, known_hosts)
            if error is None:
                raise
            raise error from None
        self._client = client
        return self

    def _load_key(self) -> Any:
        path = Path(str(self.key_filename)).expanduser()
        if not path.is_file():
            raise RemoteError(f"ssh key file {path} not found")
        password = None if self.passphrase is None else self.passphrase.encode()
        try:
            return paramiko.PKey.from_path(str(path), password)
        except TypeError:  # cryptography: encrypted, and no password given
            raise RemoteError(
                f"ssh key {path} is encrypted and no passphrase was given",
                hint="load it into ssh-agent with ssh-add and leave out --key",
            ) from None
        except (ValueError, OSError, paramiko.SSHException) as exc:
            raise RemoteError(
                f"cannot load ssh key {path}: {self._detail(exc)}",
                hint="wrong passphrase?" if self.passphrase else None,
            ) from None

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def _note_trusted(self, description: str) -> None:
        self.trusted_new_key = description

    def _connect_error(self, exc: BaseException, known_hosts: Path) -> RemoteError | None:
        """A one-line error for a failed connect, or None for errors that pass through."""
        name = known_hosts_name(self.host, self.port)
        if isinstance(exc, _UnknownHostKeyError):
            return RemoteError(
                f"host key of {name} ({exc.key.get_name()} {fingerprint(exc.key)}) is not in "
                f"{known_hosts}: refusing to connect",
                hint="check the fingerprint on the host (ssh-keygen -lf "
                "/etc/ssh/ssh_host_*_key.pub), then connect once with --trust-new-host-key "
                "to accept and save it",
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return RemoteError(
                f"host key of {name} CHANGED: it offers {exc.key.get_name()} "
                f"{fingerprint(exc.key)}, {known_hosts} has {exc.expected_key.get_name()} "
                f"{fingerprint(exc.expected_key)}: refusing to connect",
                hint="a reinstalled host or an attack; --trust-new-host-key never replaces a "
                f"known key: check it, then remove the old one with ssh-keygen -R '{name}' "
                f"-f {known_hosts}",
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return RemoteError(
                f"ssh to {self.target}: the key is encrypted and no passphrase was given",
                hint="load it into ssh-agent with ssh-add",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return RemoteError(
                f"ssh authentication to {self.target} failed: {self._detail(exc)}",
                hint="key-based auth only: give --key, or load the key into ssh-agent",
            )
        if isinstance(exc, TimeoutError):
            return RemoteError(f"ssh to {self.target}: no answer in {self.connect_timeout_s:g} s")
        if isinstance(exc, paramiko.SSHException):
            return RemoteError(f"ssh to {self.target} failed: {self._detail(exc)}")
        if isinstance(exc, EOFError):
            return RemoteError(f"ssh to {self.target}: the server closed the connection")
        if isinstance(exc, OSError):
            reason = self._detail(exc) if exc.strerror is None else exc.strerror
            return RemoteError(f"cannot connect to {self.target}: {reason}")
        return None

    def _detail(self, exc: BaseException) -> str:
        """One line of an exception's text, without any secret, not too long."""
        text = " ".join((str(exc) or type(exc).__name__).split())
        if self.passphrase:
            text = text.replace(self.passphrase, "***")
        return text[:MAX_DETAIL]

    def _transport(self) -> Any:
        if self._client is None:
            raise RemoteError(f"not connected to {self.target}", hint="call connect() first")
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"the connection to {self.target} is closed")
        return transport

    # --- commands --------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        timeout_s: float | None = None,
        on_line: LineCallback | None = None,
        on_stderr_line: LineCallback | None = None,
        cwd: str | None = None,
    ) -> ProcResult:
        """Run ``argv`` on the remote machine; its exit status is ``returncode``.

        The command string is ``shlex.join(argv)``: every argument reaches the program as is.
        ``cwd`` (relative: to the remote home) runs it in that directory, through
        ``env -C DIR --`` (GNU coreutils >= 8.28 on the remote); the result's argv is ``argv``.
        ``on_line``/``on_stderr_line`` get each output line as it arrives. After ``timeout_s``
        (default ``command_timeout_s``) the channel is closed and ToolError raised. The
        returncode is -1 when the remote program sent no exit status (killed by a signal).
        """
        args = tuple(argv)
        if not args or not all(isinstance(a, str) for a in args):
            raise ValueError("argv must be a non-empty list of strings")
        if any("\0" in a for a in args):
            raise ValueError("an argument contains a NUL byte")
        command = shlex.join(args if cwd is None else ("env", "-C", cwd, "--", *args))
        limit = self.command_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        out, err = _Lines(on_line), _Lines(on_stderr_line)
        channel = self._transport().open_session(timeout=self.connect_timeout_s)
        try:
            channel.settimeout(POLL_S)
            channel.exec_command(command)
            out_done = False
            while True:
                if time.monotonic() >= deadline:
                    raise ToolError(
                        f"{shlex.join(args[:4])} on {self.target} did not finish in {limit:g} s"
                    )
                while channel.recv_stderr_ready():
                    err.feed(channel.recv_stderr(CHUNK))
                if not out_done:
                    try:
                        data = channel.recv(CHUNK)
                    except TimeoutError:
                        continue
                    if data:
                        out.feed(data)
                    else:
                        out_done = True
                elif channel.exit_status_ready():
                    break
                else:
                    channel.status_event.wait(POLL_S)
            while channel.recv_stderr_ready():
                err.feed(channel.recv_stderr(CHUNK))
            returncode = int(channel.recv_exit_status())
        finally:
            channel.close()
        return ProcResult(args, returncode, out.finish(), err.finish())

    # --- files -----------------------------------------------------------------------------

    def fetch_dir(
        self, remote_dir: str, local_dir: Path | str, timeout_s: float | None = None
    ) -> FetchResult:
        """Copy the regular files below ``remote_dir`` to ``local_dir`` (SFTP, recursive).

        Symlinks are never followed (remote or local) and other special files are skipped;
        a remote name that is not one plain path component ('..', 'a/b') is refused with a
        RemoteError, as is a local path that would lead outside ``local_dir``.
        """
        limit = self.command_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        self._transport()
        sftp = self._client.open_sftp()
        try:
            sftp.get_channel().settimeout(self.io_timeout_s)
            try:
                top = sftp.stat(remote_dir)
            except (OSError, paramiko.SSHException) as exc:
                raise RemoteError(
                    f"{self.host}:{remote_dir}: {self._detail(exc)}", hint="nothing fetched"
                ) from None
            if not stat.S_ISDIR(top.st_mode or 0):
                raise RemoteError(f"{self.host}:{remote_dir} is not a directory")
            local_root = Path(local_dir)
            _make_local_dir(local_root)
            copier = _TreeCopier(self, sftp, local_root.resolve(), deadline, limit)
            copier.copy(remote_dir, local_root.resolve())
            return FetchResult(copier.files, copier.skipped)
        except TimeoutError as exc:
            raise ToolError(
                f"fetching {self.host}:{remote_dir}: no SFTP reply in {self.io_timeout_s:g} s"
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise RemoteError(f"fetching {self.host}:{remote_dir}: {self._detail(exc)}") from exc
        finally:
            sftp.close()


def _make_local_dir(path: Path) -> None:
    if path.is_symlink():
        raise RemoteError(f"{path} is a symlink: refusing to write through it")
    path.mkdir(parents=True, exist_ok=True)


def _check_name(name: str, remote_dir: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise RemoteError(
            f"the server listed a file {name!r} in {remote_dir}: not a plain file name, "
            "refusing to fetch (it could write outside the local directory)"
        )


class _TreeCopier:
    """The recursive walk of fetch_dir."""

    def __init__(
        self, remote: RemoteHost, sftp: Any, local_root: Path, deadline: float, limit: float
    ) -> None:
        self.remote = remote
        self.sftp = sftp
        self.local_root = local_root
        self.deadline = deadline
        self.limit = limit
        self.files: list[Path] = []
        self.skipped: list[str] = []

    def copy(self, remote_dir: str, local_dir: Path) -> None:
        entries = self.sftp.listdir_attr(remote_dir)
        for attr in entries:
            _check_name(attr.filename, remote_dir)
        for attr in sorted(entries, key=lambda a: str(a.filename)):
            if time.monotonic() >= self.deadline:
                raise ToolError(f"fetching {remote_dir} took longer than {self.limit:g} s")
            name = str(attr.filename)
            remote_path = posixpath.join(remote_dir, name)
            local_path = local_dir / name
            self._check_inside(local_path)
            mode = attr.st_mode or 0
            if stat.S_ISDIR(mode):
                _make_local_dir(local_path)
                self.copy(remote_path, local_path)
            elif stat.S_ISREG(mode):
                self._copy_file(remote_path, local_path, attr)
            else:
                kind = "symlink" if stat.S_ISLNK(mode) else "special file"
                self.skipped.append(f"{remote_path} ({kind}, not copied)")

    def _check_inside(self, local_path: Path) -> None:
        resolved = local_path.resolve()
        if local_path.is_symlink() or not resolved.is_relative_to(self.local_root):
            raise RemoteError(
                f"{local_path} leads outside {self.local_root} (a symlink?): refusing to write"
            )

    def _copy_file(self, remote_path: str, local_path: Path, attr: Any) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(local_path, flags, 0o644)
        with os.fdopen(fd, "wb") as handle:
            self.sftp.getfo(remote_path, handle)
        if attr.st_mtime is not None:
            os.utime(local_path, (attr.st_atime or attr.st_mtime, attr.st_mtime))
        self.files.append(local_path)
