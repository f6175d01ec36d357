"""The twistd plugins and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

TAPS = {"exchange-hub", "exchange-edge", "exchange-mailbox", "exchange-legacy", "exchange-lab"}
ROOT = Path(__file__).resolve().parent.parent


def test_twistd_sees_every_role_plugin():
    names = {plugin.tapname for plugin in getPlugins(IServiceMaker)}
    assert names >= TAPS


def test_no_init_in_twisted_plugins():
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_role_options_take_config_and_server():
    from exchange_emu.roles import edge, hub, lab, legacy, mailbox

    for module in (hub, edge, mailbox, legacy):
        options = module.Options()
        options.parseOptions(["--config", "etc/lab.toml", "--server", "HUB01"])
        assert options["server"] == "HUB01"
    lab_options = lab.Options()
    lab_options.parseOptions(["--config", "etc/lab.toml"])
    assert lab_options["config"] == "etc/lab.toml"


def test_console_script_help():
    exe = Path(sys.executable).parent / "exchange-emu"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "usage: exchange-emu" in result.stdout and "lab" in result.stdout


def test_check_config_prints_the_lab(tmp_path):
    exe = Path(sys.executable).parent / "exchange-emu"
    result = subprocess.run([str(exe), "check-config", "--config", str(ROOT / "etc/lab.toml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "organization Contoso, 8 servers: OK" in result.stdout
    assert "HUB01" in result.stdout and "127.0.0.1:2525" in result.stdout
