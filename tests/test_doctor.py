"""doctor: the kernel under test and the remembered KVM answer, as a person reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.bed import module_records, nvmet_modules
from harness.cli import app as cli
from harness.cli.options import vm_options
from harness.core.errors import HarnessError
from harness.kernels import prepared
from harness.vm import boot as vm
from harness.vm import doctor
from harness.vm.campaigns import vm_spec
from tests.test_vm import prepared_record

IMAGE = "/boot/vmlinuz-6.1.0-57-amd64"
QEMU = "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"


def cache_with(tmp_path: Path, *answers: vm.KvmAnswer) -> vm.AccelCache:
    cache = vm.AccelCache(tmp_path / "accel.json")
    for answer in answers:
        assert cache.remember(answer) == ""
    return cache


def answer(kvm_boots: bool, qemu: str = QEMU) -> vm.KvmAnswer:
    detail = "first line after 3.1 s" if kvm_boots else "no sign of life from a KVM guest in 60 s"
    return vm.KvmAnswer(kvm_boots, "6.1.0-57-amd64", qemu, detail, "2026-12-01 02:40:00")


def test_kvm_check_shows_a_remembered_no(tmp_path: Path) -> None:
    cache = cache_with(tmp_path, answer(False))
    check = doctor.kvm_answer_check(IMAGE, cache, QEMU, kvm_usable=True)
    assert not check.ok and check.optional  # TCG still works: a warning, not a failure
    assert "does NOT boot 6.1.0-57-amd64" in check.detail
    assert "no sign of life from a KVM guest in 60 s" in check.detail
    assert str(cache.path) in check.detail and "--accel auto uses TCG" in check.detail
    assert check.fix == "nvmf-harness doctor --test-kvm re-tests it"


def test_kvm_check_shows_a_remembered_yes(tmp_path: Path) -> None:
    check = doctor.kvm_answer_check(IMAGE, cache_with(tmp_path, answer(True)), QEMU, True)
    assert check.ok and "KVM boots 6.1.0-57-amd64" in check.detail


def test_kvm_check_of_another_qemu_is_not_known(tmp_path: Path) -> None:
    cache = cache_with(tmp_path, answer(False, qemu="7.2.21"))
    check = doctor.kvm_answer_check(IMAGE, cache, QEMU, kvm_usable=True)
    assert check.ok and "not known yet" in check.detail and "--test-kvm" in check.detail


def test_kvm_check_without_kvm(tmp_path: Path) -> None:
    check = doctor.kvm_answer_check(IMAGE, cache_with(tmp_path), QEMU, kvm_usable=False)
    assert not check.ok and check.optional and "TCG" in check.detail


def test_prepared_kernel_check_without_a_record(tmp_path: Path) -> None:
    check, release = doctor.prepared_kernel_check(tmp_path / "prepared-kernel.json")
    assert release is None
    assert not check.ok and not check.optional
    assert "scripts/setup" in check.fix


def test_prepared_kernel_check_of_changed_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "boot" / "vmlinuz-6.1.0-56-amd64"
    image.parent.mkdir()
    image.write_text("")
    record = prepared_record(tmp_path, "6.1.0-56-amd64", image)  # all at 6.1.192-2
    found = {
        "linux-image-6.1.0-56-amd64": "6.1.192-2",
        "linux-headers-6.1.0-56-amd64": "6.1.192-2",
        "linux-source-6.1": "6.1.192-3",  # upgraded since setup
    }
    monkeypatch.setattr(prepared, "installed_versions", lambda packages: found)
    check, release = doctor.prepared_kernel_check(record)
    assert release is None and not check.ok
    assert "linux-source-6.1 6.1.192-3 (was 6.1.192-2)" in check.detail
    found["linux-source-6.1"] = "6.1.192-2"
    check, release = doctor.prepared_kernel_check(record)
    assert check.ok and release == "6.1.0-56-amd64"


def test_retest_kvm_without_a_prepared_kernel(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="scripts/setup"):
        doctor.retest_kvm(lambda _line: None, tmp_path / "prepared-kernel.json")


def test_doctor_takes_test_kvm() -> None:
    args = cli.build_parser().parse_args(["doctor", "--test-kvm"])
    assert args.test_kvm is True
    assert cli.build_parser().parse_args(["doctor"]).test_kvm is False


def test_vm_commands_take_boot_timeout(tmp_path: Path) -> None:
    image = tmp_path / Path(IMAGE).name  # any host: Debian 13 has no 6.1 image in /boot
    image.write_bytes(b"")
    args = cli.build_parser().parse_args(
        ["vm", "--out", "x", "--kernel", str(image), "--boot-timeout", "90", "--accel", "auto"]
    )
    spec = vm_spec(vm_options(args), 600)
    assert (spec.boot_timeout_s, spec.kernel, spec.timeout_s) == (90.0, str(image), 600)
    args = cli.build_parser().parse_args(["vm", "--out", "x", "--kernel", str(image)])
    assert vm_spec(vm_options(args), 600).boot_timeout_s is None  # 60 s KVM / 180 s TCG
    args = cli.build_parser().parse_args(["vm", "--out", "x", "--boot-timeout", "0"])
    with pytest.raises(HarnessError, match="--boot-timeout"):
        vm_spec(vm_options(args), 600)


def test_nvmet_checks_say_what_is_built_and_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "load_nvmet_record", lambda cache, release: None)
    loaded = nvmet_modules.LoadedNvmet(
        True, True, True, module_records.NVMET_MODULE_VERSION, "490F202F", True, None
    )
    monkeypatch.setattr(doctor, "loaded_nvmet", lambda: loaded)
    built, now = doctor.nvmet_checks("6.1.0-57-amd64")
    assert not built.ok and built.optional
    assert "not built for 6.1.0-57-amd64" in built.detail
    assert built.fix == "nvmf-harness build-nvmet --release 6.1.0-57-amd64"
    assert now.ok and "490F202F" in now.detail and "out of tree" in now.detail
