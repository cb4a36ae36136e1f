"""Reading a node's console (labvirt.console) and judging why a node is not ready
(labvirt.ops.guests.judge): pure, no libvirt, no guest."""

from __future__ import annotations

import pytest

from labvirt.console import current_boot, excerpt, read_console
from labvirt.ops.guests import judge
from labvirt.sshclient import AuthRefused, NoSshAnswer, NotListening, Unreachable

pytestmark = pytest.mark.unit

TINY_FIRST_BOOT = """\
labvirt-tiny: booting
labvirt-tiny: seed found on /dev/sr0
labvirt-tiny: static eth0 192.168.24.24/24
labvirt-tiny: ready oc0-ceph-4
labvirt-tiny: stopping for poweroff
"""
TINY_SECOND_BOOT_STARTED = TINY_FIRST_BOOT + "labvirt-tiny: booting\n"
# As a Debian 12 guest with cloud-init 22.4 writes it, terminal escapes and all.
DEBIAN_FAILED = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
Booting `Debian GNU/Linux'
[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)
\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mLocal File Systems\x1b[0m.
[    9.812345] cloud-init[201]: Cloud-init v. 22.4 running 'init-local' at Wed, 02 Dec 2026
2026-12-02 18:00:01,123 - network_state.py[ERROR]: Address default is not a valid ip network
[   10.1] cloud-init[201]: ValueError: Address default is not a valid ip address
2026-12-02 18:00:01,200 - util.py[WARNING]: failed stage init-local
[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39mcloud-init-local.service\x1b[0m - \
Initial cloud-init job (pre-networking).
""" + "".join(f"[   11.{i}] some later line {i}\n" for i in range(40))
DEBIAN_FINE = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)
[    0.000000] Linux version 6.1.0-28-cloud-amd64
[    9.8] cloud-init[201]: Cloud-init v. 22.4 running 'init-local' at Wed, 02 Dec 2026
[   20.1] cloud-init[301]: Cloud-init v. 22.4 running 'modules:config' at Wed, 02 Dec 2026
oc0-ceph-0 login: \n"""


def test_only_the_current_boot_counts_in_an_appended_log():
    """The log keeps every boot; a 'ready' of the previous one must not count."""
    reading = read_console(TINY_SECOND_BOOT_STARTED)
    assert not reading.finished
    assert reading.lines == ("labvirt-tiny: booting",)
    assert read_console(TINY_FIRST_BOOT).finished
    # the earliest kind of boot marker decides where a boot begins
    assert current_boot("old\nSeaBIOS (version 1)\nLinux version 6\nWelcome to X!\nnew\n") \
        .startswith("SeaBIOS")
    assert current_boot("no marker at all\n") == "no marker at all\n"


def test_a_failed_cloud_init_stage_is_fatal_and_its_errors_survive_the_tail():
    reading = read_console(DEBIAN_FAILED)
    assert reading.failed and not reading.finished and reading.booted
    assert reading.stage == "cloud-init 22.4: init-local"
    assert any("Address default is not a valid ip network" in e for e in reading.error_lines)
    text = excerpt(reading, lines=10)
    # the ERROR lines scrolled out of the last 10 lines, and are shown all the same
    assert text.index("network_state.py[ERROR]") < text.index("...") < \
        text.index("some later line 39")
    assert "\x1b" not in text  # terminal escapes cleaned
    assert "[FAILED] Failed to start cloud-init-local.service" in text


def test_a_booting_distribution_shows_its_stage_then_its_login_prompt():
    reading = read_console(DEBIAN_FINE)
    assert reading.booted and not reading.failed and not reading.finished
    assert reading.stage == "cloud-init 22.4: modules:config"
    assert reading.last_line == "oc0-ceph-0 login:"
    done = read_console(DEBIAN_FINE + "Cloud-init v. 22.4 finished at Wed, 02 Dec 2026. "
                        "Datasource DataSourceNoCloud [seed=/dev/sr0]. Up 45.2 seconds\n")
    assert done.finished and done.stage == "cloud-init 22.4: finished"


def test_an_empty_console_is_still_booting():
    reading = read_console("")
    assert not reading.booted and reading.lines == ()
    assert excerpt(reading) == "(the console is empty)"


REFUSED = AuthRefused("n1: ssh refuses labvirt's key /k for user 'stack' (Authentication "
                      "failed.)")
NO_BANNER = NoSshAnswer("n1: 127.0.0.1:40001 accepts connections but nothing speaks ssh "
                        "behind it")


@pytest.mark.parametrize(("last", "console", "state", "start"), [
    (REFUSED, TINY_FIRST_BOOT, "refused",
     "booted, but refuses labvirt: ssh refuses labvirt's key /k for user 'stack'"),
    (NO_BANNER, DEBIAN_FINE, "no-network",
     "booted, but not ssh-ready after 30 s: its ssh forward accepts connections and "
     "nothing speaks ssh behind it: no network inside the guest"),
    (NO_BANNER, TINY_SECOND_BOOT_STARTED, "booting",
     "still booting after 30 s: its console has not reached the ready point"),
    (NotListening("n1: nothing listens on 127.0.0.1:40001"), "", "not-listening",
     "not ssh-ready after 30 s: nothing listens on 127.0.0.1:40001 (is its domain running?"),
    (Unreachable("n1: cannot reach x"), None, "booting", "not ssh-ready after 30 s (cannot"),
])
def test_a_node_not_ready_is_told_which_of_its_states_it_is_in(last, console, state, start):
    reading = None if console is None else read_console(console)
    r = judge("n1", 30, 31.5, last, reading)
    assert not r.ready and r.state == state
    assert r.message.startswith(start), r.message
    assert "fix:" in r.message or state == "not-listening"
    if console:
        assert "console (errors and last lines):" in r.message


def test_a_node_answering_as_another_host_is_named():
    r = judge("n1", 30, 31.0, None, read_console(TINY_FIRST_BOOT), wrong_name="n2")
    assert r.state == "wrong-host" and r.message.startswith("answers ssh as 'n2', not as 'n1'")
