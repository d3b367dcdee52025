"""Where the checkout's own directories are: one definition for every layer.

The harness runs from a checkout (``pip install -e .``): configs/, patches/ and build/ sit
beside the ``harness`` package, and the VM guest shares the same root filesystem, so the
same paths hold on both sides of a boot.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = REPO_ROOT / "configs"
PATCHES_DIR = REPO_ROOT / "patches"
BUILD_DIR = REPO_ROOT / "build"
# Tools the harness fetched itself, never installed: Debian's nvmetcli from sid, unpacked
# (harness.kernels.nvmetcli_tool); procs.find_tool looks here after PATH.
TOOLS_BIN_DIR = BUILD_DIR / "tools" / "bin"
