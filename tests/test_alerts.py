"""The example alert rules (alerts/dmn.yml): valid, firing where their tests say, on gauges the daemon serves."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ALERTS = Path(__file__).resolve().parent.parent / "alerts"
PROMTOOL = shutil.which("promtool")
if PROMTOOL is None and os.environ.get("DMN_REQUIRE_TOOLS"):
    raise RuntimeError("DMN_REQUIRE_TOOLS is set but promtool is missing: apt-get install prometheus")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed")
@pytest.mark.parametrize("command", [["check", "rules", "dmn.yml"], ["test", "rules", "dmn.test.yml"]])
def test_the_alert_rules_pass_promtool(command):
    done = subprocess.run([PROMTOOL, *command], cwd=ALERTS, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_the_alert_rules_read_only_gauges_the_daemon_serves():
    from dmn.ops import daemon

    served = set(re.findall(r'(?:Gauge|Counter)\("(dmn_\w+)"', Path(daemon.__file__).read_text()))
    used = set(re.findall(r"\b(dmn_\w+)", (ALERTS / "dmn.yml").read_text()))
    counters = {name + "_total" for name in re.findall(r'Counter\("(dmn_\w+)"', Path(daemon.__file__).read_text())}
    assert used and used <= served | counters, used - served - counters
