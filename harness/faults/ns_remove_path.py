"""``ns_remove_path``: the namespace leaves one path only, by the host's scan of that path's
controller, while the controller stays live; then it comes back (harness/path_removal.py has
the mechanisms: ``identity_flip`` on stock nvmet, ``hidden*`` with our patched nvmet)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.bed import path_removal
from harness.faults.base import Fault, register, require_controller

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed
    from harness.config.campaign import CampaignConfig


def make_path_removal(bed: Testbed) -> path_removal.PathRemoval:
    """The ``ns_remove_path`` mechanism the bed's config asks for."""
    assert bed.host is not None and bed.target is not None and bed.spec is not None
    settings = bed.config.ns_remove_path
    paths = path_removal.PathSet(bed.host, bed.nqn)
    if settings.mechanism in path_removal.VISIBILITY_OF_MECHANISM:
        return path_removal.PortVisibility(
            paths,
            bed.kfs,
            path_removal.VISIBILITY_OF_MECHANISM[settings.mechanism],
            timeout_s=settings.removal_timeout_s,
        )
    namespace = bed.spec.subsystems[0].namespaces[0]
    return path_removal.IdentityFlip(
        paths,
        bed.target,
        namespace.nsid,
        namespace.device_uuid,
        timeout_s=settings.removal_timeout_s,
    )


@register
class NsRemovePath(Fault):
    name = "ns_remove_path"
    restore_order = 90
    inject_summary = "the namespace leaves one path only; its controller stays live"
    restore_summary = "it comes back to that path"
    requires = (
        "mechanism identity_flip: stock nvmet",
        "mechanism hidden*: our patched nvmet (patches/nvmet-ns-visibility/, built per release)",
    )

    def __init__(self, bed: Testbed) -> None:
        super().__init__(bed)
        self._removal: path_removal.PathRemoval | None = None

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        return None

    @classmethod
    def unmet_here(cls, module_exists: Callable[[str], bool]) -> str | None:
        return None if module_exists("nvmet") else "no nvmet module in this kernel"

    def removal(self) -> path_removal.PathRemoval:
        """The mechanism of this run (made on first use)."""
        if self._removal is None:
            self._removal = make_path_removal(self.bed)
        return self._removal

    def prepare(self, path: int) -> None:
        self.removal().prepare()

    def inject(self, path: int) -> None:
        self.removal().remove(require_controller(self.bed, path), self.bed.portid(path))

    def restore(self, path: int) -> None:
        self.removal().restore(require_controller(self.bed, path), self.bed.portid(path))

    def restore_everything(self) -> list[str]:
        return [] if self._removal is None else self._removal.restore_all()

    def take_notes(self) -> list[str]:
        if self._removal is None:
            return []
        notes = list(self._removal.notes)
        self._removal.notes.clear()
        return notes
