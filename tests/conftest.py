"""Suite-wide test settings: tests that drive a system program skip, with the reason, where it
is missing, except in CI, which installs them and sets NNSPEC_REQUIRE_TOOLS=1 so that such a
skip fails the run instead of hiding a missing tool."""

from __future__ import annotations

import os
import shutil

import pytest

#: system programs some tests drive, and how to install them (Debian package names)
TOOLS = {
    "dot": "Graphviz (apt-get install graphviz)",
    "chromium": "Chromium (apt-get install chromium)",
    "chromedriver": "ChromeDriver (apt-get install chromium-driver)",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_tool(name, ...): the test drives these system programs (see TOOLS)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs_tool"):
        missing = [TOOLS.get(name, name) for name in marker.args if not shutil.which(name)]
        if not missing:
            continue
        reason = f"needs {', '.join(missing)}"
        if os.environ.get("NNSPEC_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{reason}, and NNSPEC_REQUIRE_TOOLS=1 says it must be installed")
        pytest.skip(reason)
