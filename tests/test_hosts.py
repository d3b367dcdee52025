"""Which Debian the host runs (/etc/os-release), what each supported one's kernel under test
is made of, and one line naming the supported ones on any other host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UsageError
from harness.kernels import hosts

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "scripts" / "setup"

# /etc/os-release as the systems ship it (trimmed to the keys that matter).
BOOKWORM = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""
TRIXIE = """\
PRETTY_NAME="Debian GNU/Linux 13 (trixie)"
NAME="Debian GNU/Linux"
VERSION_ID="13"
VERSION="13 (trixie)"
VERSION_CODENAME=trixie
DEBIAN_VERSION_FULL=13.2
ID=debian
"""
BULLSEYE = """\
PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"
VERSION_ID="11"
VERSION_CODENAME=bullseye
ID=debian
"""
SID = """\
PRETTY_NAME="Debian GNU/Linux forky/sid"
NAME="Debian GNU/Linux"
VERSION_CODENAME=forky
ID=debian
"""
UBUNTU = """\
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"""
FEDORA = """\
NAME="Fedora Linux"
VERSION="41 (Server Edition)"
ID=fedora
VERSION_ID=41
PRETTY_NAME="Fedora Linux 41 (Server Edition)"
"""


def os_release(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "os-release"
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_os_release_strips_quotes_and_comments() -> None:
    values = hosts.parse_os_release("# c\nID=debian\nPRETTY_NAME=\"A B\"\nX='y'\n\nBAD\n")
    assert values == {"ID": "debian", "PRETTY_NAME": "A B", "X": "y"}


@pytest.mark.parametrize(("text", "expected"), [(BOOKWORM, hosts.BOOKWORM), (TRIXIE, hosts.TRIXIE)])
def test_detect_a_supported_debian(tmp_path: Path, text: str, expected: object) -> None:
    assert hosts.detect(os_release(tmp_path, text)) is expected


def test_detect_by_version_id_when_the_codename_is_missing(tmp_path: Path) -> None:
    assert hosts.detect(os_release(tmp_path, 'ID=debian\nVERSION_ID="13"\n')) is hosts.TRIXIE


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (BULLSEYE, "Debian GNU/Linux 11 (bullseye)"),
        (SID, "Debian GNU/Linux forky/sid"),
        (UBUNTU, "Ubuntu 24.04.1 LTS"),  # ID_LIKE=debian is not Debian
        (FEDORA, "Fedora Linux 41 (Server Edition)"),
        ("", "not an os-release(5) system"),
    ],
)
def test_an_unsupported_host_is_one_line_naming_the_supported(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(hosts.UnsupportedHost) as info:
        hosts.detect(os_release(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert f"this host is {named}: " in message
    assert "supports Debian 12 (bookworm) or Debian 13 (trixie), amd64" in message


def test_no_os_release_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(hosts.UnsupportedHost, match=r"cannot read .*supports Debian 12"):
        hosts.detect(tmp_path / "missing")


def test_each_release_knows_its_kernel_packages() -> None:
    assert hosts.BOOKWORM.source_package == "linux-source-6.1"
    assert hosts.TRIXIE.source_package == "linux-source-6.12"
    assert hosts.TRIXIE.source_tarball == Path("/usr/src/linux-source-6.12.tar.xz")
    assert hosts.TRIXIE.image_release("linux-image-6.12.117+deb13-amd64") == (
        "6.12.117+deb13-amd64"
    )
    for other in (
        "linux-image-6.12.117+deb13-amd64-unsigned",
        "linux-image-6.12.117+deb13-cloud-amd64",
        "linux-image-6.12.107+deb12-amd64",  # bookworm-backports
        "linux-image-6.1.0-57-amd64",
        "linux-image-amd64",
    ):
        assert hosts.TRIXIE.image_release(other) is None, other
    assert hosts.BOOKWORM.image_release("linux-image-6.1.0-57-amd64") == "6.1.0-57-amd64"
    assert hosts.BOOKWORM.image_release("linux-image-6.12.117+deb13-amd64") is None


def test_search_regex_and_image_pattern_agree() -> None:
    """What apt-cache search is asked for is what choose() keeps (grep -E is close enough to
    apt's POSIX regex for these patterns)."""
    for release in hosts.SUPPORTED:
        name = f"linux-image-{release.example_release}"
        assert release.image_release(name) == release.example_release
        result = subprocess.run(
            ["grep", "-Ex", release.search_regex.strip("^$")],
            input=name + "\n",
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert result.stdout.strip() == name


def test_release_key_sorts_both_namings() -> None:
    assert sorted(["6.12.99+deb13-amd64", "6.12.117+deb13-amd64"], key=hosts.release_key)[-1] == (
        "6.12.117+deb13-amd64"
    )
    assert max(["6.1.0-9-amd64", "6.1.0-57-amd64"], key=hosts.release_key) == "6.1.0-57-amd64"


def test_source_package_of_a_release() -> None:
    assert hosts.source_package_of("6.1.0-57-amd64") == "linux-source-6.1"
    assert hosts.source_package_of("6.12.117+deb13-amd64") == "linux-source-6.12"
    with pytest.raises(UsageError):
        hosts.source_package_of("amd64")


def setup_supported_table() -> list[tuple[str, str]]:
    """scripts/setup's SUPPORTED_DEBIAN array (codename:version_id), as bash reads it."""
    text = SETUP.read_text(encoding="utf-8")
    start = text.index("SUPPORTED_DEBIAN=(")
    block = text[start : text.index(")\n", start) + 2]
    result = subprocess.run(
        ["bash", "-c", block + 'printf "%s\\n" "${SUPPORTED_DEBIAN[@]}"\n'],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pairs = [line.split(":") for line in result.stdout.split()]
    return [(codename, version) for codename, version in pairs]


def test_setup_checks_the_same_releases_before_apt() -> None:
    assert setup_supported_table() == [(r.codename, r.version_id) for r in hosts.SUPPORTED]


@pytest.mark.parametrize(
    ("text", "rc", "line"),
    [
        (TRIXIE, 0, ""),
        (BOOKWORM, 0, ""),
        (UBUNTU, 2, "setup: this host is Ubuntu 24.04.1 LTS: the harness supports "),
        (BULLSEYE, 2, "setup: this host is Debian GNU/Linux 11 (bullseye): "),
        (SID, 2, "setup: this host is Debian GNU/Linux forky/sid: "),
    ],
)
def test_setup_refuses_another_host_in_one_line(
    tmp_path: Path, text: str, rc: int, line: str
) -> None:
    """The check runs before anything is installed (NVMF_HARNESS_OS_RELEASE: another file)."""
    text_path = os_release(tmp_path, text)
    setup = SETUP.read_text(encoding="utf-8")
    start = setup.index("die() {")
    check = setup[start : setup.index("# --- end of the host check", start)]
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + check + "check_host\n"],
        env={"PATH": "/usr/bin:/bin", "NVMF_HARNESS_OS_RELEASE": str(text_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == rc, result.stderr
    if line:
        err = result.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(line), err
        assert "Debian 12 (bookworm) or Debian 13 (trixie), amd64" in err[0]


def test_kernel_host_cli_on_another_host_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hosts, "OS_RELEASE", os_release(tmp_path, FEDORA))
    assert main(["kernel", "host"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "supports Debian 12 (bookworm) or Debian 13 (trixie)" in err[0]


def test_kernel_host_cli_on_trixie(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hosts, "OS_RELEASE", os_release(tmp_path, TRIXIE))
    assert main(["kernel", "host"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Debian 13 (trixie): ") and "linux-source-6.12" in out
