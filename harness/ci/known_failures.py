"""Known failures: a hand-edited TOML list, kdevops "expunge" style, of scenarios expected to
fail on some kernels, at a rate, for a reason, with a link.

    [[failure]]
    kernel = "6.1.0-*-amd64"         # fnmatch pattern on the kernel release
    scenario = "race-ns-remove-path" # the campaign name ([campaign] name of its config)
    variant = "unfixed"              # optional: only runs of this module variant
    expected_rate = 0.5              # failing iterations / iterations, in (0, 1]
    reason = "why it fails"
    link = "https://..."             # the bug report, fix, or discussion

A night whose scenario matches an entry is a known failure (JUnit: skipped with the reason;
KCIDB: an issue with an incident per failing test), unless its rate is significantly above
``expected_rate`` (harness/baseline.py decides). The file is validated as a whole when read:
a bad entry is a ConfigError naming the entry and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from harness.core.errors import ConfigError

DEFAULT_FILE = Path("configs/nightly/known-failures.toml")
REQUIRED = ("kernel", "scenario", "expected_rate", "reason", "link")
OPTIONAL = ("variant",)


@dataclass(frozen=True)
class KnownFailure:
    """One entry: ``kernel`` is an fnmatch pattern; ``expected_rate`` a fraction in (0, 1]."""

    kernel: str
    scenario: str
    expected_rate: float
    reason: str
    link: str
    variant: str = ""

    def matches(self, release: str, scenario: str, variant: str = "") -> bool:
        return (
            fnmatchcase(release, self.kernel)
            and scenario == self.scenario
            and (not self.variant or variant == self.variant)
        )

    @property
    def key(self) -> str:
        """A stable name for ids: ``known:<scenario>:<kernel pattern>[:<variant>]``."""
        return ":".join(p for p in ("known", self.scenario, self.kernel, self.variant) if p)

    def describe(self) -> str:
        return f"known failure: {self.reason} ({self.link})"


def load(path: Path) -> list[KnownFailure]:
    """The entries of ``path`` (a missing file is none); ConfigError, one line, otherwise."""
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}", hint=f"fix {path}") from None
    unknown = sorted(set(data) - {"failure"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown table {unknown[0]!r}", hint="entries are [[failure]] tables"
        )
    entries = data.get("failure", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'failure' must be [[failure]] tables")
    return [_entry(path, number, entry) for number, entry in enumerate(entries, start=1)]


def _entry(path: Path, number: int, entry: Any) -> KnownFailure:
    def bad(field: str, why: str) -> ConfigError:
        name = entry.get("scenario") if isinstance(entry, dict) else None
        where = f"failure #{number}" + (f" ({name})" if isinstance(name, str) else "")
        return ConfigError(f"{path}: {where}: {field}: {why}", hint=f"edit {path}")

    if not isinstance(entry, dict):
        raise bad("entry", "must be a [[failure]] table")
    extra = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if extra:
        raise bad(extra[0], f"unknown field (known: {', '.join(REQUIRED + OPTIONAL)})")
    for field in REQUIRED:
        if field not in entry:
            raise bad(field, "missing")
    for field in ("kernel", "scenario", "reason", "link", "variant"):
        value = entry.get(field, "")
        if not isinstance(value, str) or (field != "variant" and not value.strip()):
            raise bad(field, "must be a non-empty string")
    rate = entry["expected_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
        raise bad("expected_rate", f"must be a number in (0, 1], not {rate!r}")
    if not entry["link"].startswith(("https://", "http://")):
        raise bad("link", f"must be an http(s) URL, not {entry['link']!r}")
    return KnownFailure(
        kernel=entry["kernel"],
        scenario=entry["scenario"],
        expected_rate=float(rate),
        reason=" ".join(entry["reason"].split()),
        link=entry["link"],
        variant=entry.get("variant", ""),
    )


def match(
    entries: list[KnownFailure], release: str, scenario: str, variant: str = ""
) -> KnownFailure | None:
    """The first entry for this kernel release, scenario and variant, if any."""
    for entry in entries:
        if entry.matches(release, scenario, variant):
            return entry
    return None
