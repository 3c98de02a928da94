"""An operator lists the envelope's state and clears a suspension on the agent's store file; the envelope, reading
its state at every decision, commands again at once."""

from __future__ import annotations

from pathlib import Path

from helpers.aio import async_test
from helpers.envelope import DEV, Rig

from agent.control.operator import main
from agent.store import ControlFlag

SITE = """
site_id = "sub-1"
[store]
path = "{db}"
max_mb = 16
[uplink]
broker = "mqtt://127.0.0.1:1"
"""


@async_test
async def test_a_suspension_cleared_on_the_store_file_lets_the_running_envelope_command_again(
    tmp_path: Path, capsys
) -> None:
    db = tmp_path / "a.db"
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(db=db))
    async with Rig(db) as rig:
        await rig.store.control_set_flag(ControlFlag("suspended", "fn", DEV, rig.clock.t, "readback_failed", {}))
        assert (await rig.submit()).reason == "suspended"
        assert main(["--config", str(site), "list"]) == 0
        assert "suspended fn" in capsys.readouterr().out
        assert main(["--config", str(site), "clear", "fn", DEV, "--by", "ops-7"]) == 0
        assert (await rig.submit()).outcome == "applied"
        ((kind, data),) = [r for r in rig.rows("events") if r[0] == "control_suspension_cleared"]
        assert data == {"function": "fn", "by": "ops-7"}
        assert main(["--config", str(site), "clear", "fn", DEV]) == 1, "nothing left to clear"


def test_a_bad_site_file_is_reported_not_a_traceback(tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tmp_path / "missing.toml"), "list"]) == 2
    assert "no such file" in capsys.readouterr().err
