"""Every NoCloud seed labvirt writes, read by REAL cloud-init of several versions.

cloud-init comes from Debian's packages (cloudinit_env.py: 22.4 of Debian 12, 25.1 of
Debian 13, and sid's current one), each run in its own subprocess (cloudinit_probe.py) on the
seed ISOs that labvirt builds for two labs:

- the demo lab (``-f overrides/glance-dcn.yml -f overrides/tiny.yml``: forward access, so a
  management NIC on DHCP; its ``default`` network has no DHCP);
- a real-size lab: the embedded default layout with ``uefi: true`` and
  ``labvirt.access: forward`` (a DHCP NIC on ``default`` and a management NIC);
- the embedded default as it is (no management NIC).

What is checked, per node and per version: the NoCloud datasource finds the ISO by its label
(real blkid) and reads exactly labvirt's three files from it; the cloud-config passes the
strict schema (errors and deprecations) and ``cloud-init schema -c``; the network-config
passes the v2 schema where the version has one, parses into a network_state, and renders
through ``cloud-init devel net-convert`` to ENI, netplan and sysconfig files that put the
static ctlplane address on the NIC with the node's MAC, the default route 0.0.0.0/0 via the
gateway, the DNS servers, DHCP on the other NICs; cloud-init's own user/hostname/ssh-key
handling reads the users, sudo, keys, hostname, fqdn and the pre-set host key.

What is faked and why is said in cloudinit_probe.py (kernel mount of the ISO, DMI, cmdline).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudinit_env  # beside this file (pytest puts the test's directory on sys.path)
import pytest
import yaml

from labvirt.ops.guests import lab_access, seed_spec
from labvirt.resources import default_layout
from labvirt.seed import SeedInterface, SeedSpec, build_seed_iso, render_seed_files
from labvirt.session import Session

pytestmark = pytest.mark.consumer

HERE = Path(__file__).parent
REPO = HERE.parents[1]
PROBE = HERE / "cloudinit_probe.py"


def version_tuple(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


# --------------------------------------------------------------------------- the labs


@dataclass(frozen=True)
class Expected:
    """What a node's seed must say, from labvirt's model (not from the seed)."""

    hostname: str
    fqdn: str
    ctl_mac: str
    ctl_address: str  # CIDR
    gateway: str | None
    dns: tuple[str, ...]
    dhcp_macs: tuple[str, ...]  # every other NIC that must be on DHCP (mgmt0 among them)
    mgmt_mac: str | None
    users: tuple[str, ...]
    lab_key: str
    host_key_public: str
    files: dict[str, bytes]


def write_lab(tag: str, files: list[Path], out: Path) -> dict[str, Expected]:
    session = Session(files=files, state_root=out / "state")
    lab = session.lab()
    access = lab_access(session, lab)
    nodes: dict[str, Expected] = {}
    cp = lab.ctlplane
    for node in lab.nodes:
        if node.boot != "image":
            continue
        seed = render_seed_files(seed_spec(lab, node, access))
        name = f"{tag}-{node.hostname}"
        (out / f"{name}.iso").write_bytes(build_seed_iso(seed))
        ctl = next(n for n in node.nics if n.network == cp.network)
        dhcp = tuple(n.mac for n in node.nics if n is not ctl
                     and lab.network(n.network).dhcp_range is not None)
        if node.mgmt_mac:
            dhcp += (node.mgmt_mac,)
        nodes[name] = Expected(
            hostname=node.hostname,
            fqdn=f"{node.hostname}.{cp.dns_domain}",
            ctl_mac=ctl.mac,
            ctl_address=f"{node.ctlplane_ip}/{cp.cidr.prefixlen}",
            gateway=None if node.is_undercloud else str(cp.gateway),
            dns=tuple(str(a) for a in cp.dns),
            dhcp_macs=dhcp,
            mgmt_mac=node.mgmt_mac,
            users=(lab.ssh_user, *(u for u, _ in lab.extra_users if u != lab.ssh_user)),
            lab_key=access.key.public_line,
            host_key_public=access.host_keys[node.hostname].public_line,
            files=seed,
        )
    return nodes


@pytest.fixture(scope="session")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Expected]]:
    out = tmp_path_factory.mktemp("seeds")
    forward = out / "forward-uefi.yml"
    forward.write_text("uefi: true\nlabvirt:\n  access: forward\n")
    expected: dict[str, Expected] = {}
    expected |= write_lab("demo", [REPO / "overrides/glance-dcn.yml",
                                   REPO / "overrides/tiny.yml"], out / "demo")
    expected |= write_lab("fwd", [default_layout(), forward], out / "fwd")
    expected |= write_lab("default", [default_layout()], out / "default")
    # the form labvirt wrote before: the checker must reject it on cloud-init < 25.3
    some = expected["demo-oc0-ceph-0"]
    old = out / "old"
    old.mkdir()
    (old / "user-data").write_bytes(some.files["user-data"])
    (old / "network-config").write_text(re.sub(
        r"^( +)gateway4: (\S+)$", r"\1routes:\n\1- to: default\n\1  via: \2",
        some.files["network-config"].decode(), flags=re.M))
    assert b"to: default" in (old / "network-config").read_bytes()
    # a cloud-config the schema must refuse: the schema check is live
    bad = out / "bad"
    bad.mkdir()
    (bad / "user-data").write_text(some.files["user-data"].decode().replace(
        "mode: auto", "mode: sometimes"))
    (bad / "network-config").write_bytes(some.files["network-config"])
    # dual stack: both default routes (labvirt's labs are IPv4 today; SeedInterface takes
    # gateway6 for ::/0)
    v6 = out / "v6"
    v6.mkdir()
    (v6 / "user-data").write_bytes(some.files["user-data"])
    (v6 / "network-config").write_bytes(render_seed_files(SeedSpec(
        instance_id="v6", hostname="v6", fqdn="v6.localdomain", users=(), host_keys={},
        interfaces=(SeedInterface("52:54:00:00:00:06", "nic0",
                                  ("192.168.24.40/24", "fd00:24::40/64"),
                                  gateway4="192.168.24.1", gateway6="fd00:24::1",
                                  nameservers=("192.168.24.1",)),),
    ))["network-config"])
    manifest = {
        "seeds": [{"name": n, "iso": str(out / n.split("-", 1)[0] / f"{n}.iso")}
                  for n in expected],
        "raw": [{"name": d.name, "user-data": str(d / "user-data"),
                 "network-config": str(d / "network-config")} for d in (old, bad, v6)],
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out, expected


def test_the_labs_cover_what_the_issue_asks(seeds: tuple[Path, dict[str, Expected]]) -> None:
    _, expected = seeds
    assert any(e.mgmt_mac for e in expected.values())
    assert any(not e.mgmt_mac for e in expected.values())
    assert any(e.gateway is None for e in expected.values())  # undercloud
    assert any(len(e.dhcp_macs) == 2 for e in expected.values())  # default NIC + mgmt0
    assert len(expected) >= 30


# --------------------------------------------------------------------------- cloud-init runs


@pytest.fixture(scope="session", params=cloudinit_env.RELEASES, ids=lambda r: r.label)
def cloudinit(request: pytest.FixtureRequest, seeds: tuple[Path, dict[str, Expected]],
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The probe's report: what one real cloud-init version made of every seed."""
    release: cloudinit_env.Release = request.param
    try:
        version, tree = cloudinit_env.ensure(release)
    except cloudinit_env.Unavailable as exc:
        pytest.skip(f"cloud-init of {release.why} not available: {exc}")
    assert shutil.which("bsdtar"), "bsdtar (libarchive-tools) is missing: run scripts/setup.sh"
    out, _ = seeds
    work = tmp_path_factory.mktemp(f"ci-{release.label}")
    env = {**os.environ, "PYTHONPATH": str(tree), "TZ": "UTC"}
    proc = subprocess.run([sys.executable, str(PROBE), str(out / "manifest.json"), str(work)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["version"] == version.split("-")[0]
    return report


def each_seed(report: dict[str, Any], expected: dict[str, Expected]):
    assert sorted(report["seeds"]) == sorted(expected)
    for name, exp in expected.items():
        yield name, report["seeds"][name], exp


def test_nocloud_reads_exactly_labvirts_files_from_the_iso(
        cloudinit: dict[str, Any], seeds: tuple[Path, dict[str, Expected]]) -> None:
    out, expected = seeds
    for name, got, exp in each_seed(cloudinit, expected):
        ds = got["nocloud"]
        assert ds["ok"], name
        iso = str(out / name.split("-", 1)[0] / f"{name}.iso")
        assert ds["seed"] == iso and ds["mounted"] == [iso], name  # found by label cidata
        assert ds["user-data"].encode() == exp.files["user-data"], name
        assert ds["network-config"] == yaml.safe_load(exp.files["network-config"]), name
        meta = yaml.safe_load(exp.files["meta-data"])
        assert {k: ds["meta-data"][k] for k in meta} == meta, name
        assert ds["meta-data"]["local-hostname"] == exp.hostname


def test_user_data_passes_the_strict_schema_and_cloud_init_schema(
        cloudinit: dict[str, Any], seeds: tuple[Path, dict[str, Expected]]) -> None:
    for name, got, _ in each_seed(cloudinit, seeds[1]):
        assert got["user-data-schema"] == [], (name, got["user-data-schema"])
        cli = got["schema-cli"]
        assert cli["status"] == 0, (name, cli)
        assert re.search(r"^Valid (cloud-config|schema)", cli["stdout"], re.M), (name, cli)


def test_network_config_passes_the_v2_schema_where_there_is_one(
        cloudinit: dict[str, Any], seeds: tuple[Path, dict[str, Expected]]) -> None:
    has_schema = version_tuple(cloudinit["version"]) >= (23, 4)
    for name, got, _ in each_seed(cloudinit, seeds[1]):
        if has_schema:
            assert got["network-config-schema"] == [], (name, got["network-config-schema"])
        else:
            assert got["network-config-schema"] is None  # 22.4 ships no network schema


def test_network_state(cloudinit: dict[str, Any],
                       seeds: tuple[Path, dict[str, Expected]]) -> None:
    for name, got, exp in each_seed(cloudinit, seeds[1]):
        ns = got["network-state"]
        assert "error" not in ns, (name, ns)
        by_mac = {i["mac_address"]: (n, i) for n, i in ns["interfaces"].items()}
        assert len(by_mac) == len(ns["interfaces"]) == 1 + len(exp.dhcp_macs), name
        _, ctl = by_mac[exp.ctl_mac]
        (subnet,) = ctl["subnets"]
        assert subnet["type"] == "static"
        iface = ipaddress.ip_interface(exp.ctl_address)
        assert (subnet["address"], subnet["prefix"]) == (str(iface.ip),
                                                          iface.network.prefixlen), name
        assert subnet["dns_nameservers"] == list(exp.dns), name
        # the default route as the subnet's gateway (labvirt writes `gateway4`)
        assert subnet.get("gateway") == (exp.gateway or None), name
        assert subnet.get("routes", []) == [], name
        for mac in exp.dhcp_macs:
            _, other = by_mac[mac]
            assert [s["type"] for s in other["subnets"]] == ["dhcp4"], (name, mac)
        if exp.mgmt_mac:
            assert by_mac[exp.mgmt_mac][0] == "mgmt0"


def _kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def _rendered(got: dict[str, Any], kind: str, name: str) -> dict[str, str]:
    result = got["render"][kind]
    assert result["status"] == 0, (name, kind, result["stderr"][-2000:])
    return result["files"]


def _udev_names(files: dict[str, str]) -> dict[str, str]:
    rules = files["etc/udev/rules.d/70-persistent-net.rules"]
    return dict(re.findall(r'ATTR\{address\}=="([0-9a-f:]+)", NAME="([^"]+)"', rules))


def test_sysconfig_rendering(cloudinit: dict[str, Any],
                             seeds: tuple[Path, dict[str, Expected]]) -> None:
    """What CentOS Stream / RHEL get: network-scripts ifcfg files."""
    for name, got, exp in each_seed(cloudinit, seeds[1]):
        files = _rendered(got, "sysconfig", name)
        ifcfg = {k.rsplit("ifcfg-", 1)[1]: _kv(v) for k, v in files.items() if "/ifcfg-" in k}
        by_mac = {c["HWADDR"].lower(): (dev, c) for dev, c in ifcfg.items()}
        dev, ctl = by_mac[exp.ctl_mac]
        iface = ipaddress.ip_interface(exp.ctl_address)
        assert ctl["DEVICE"] == dev and ctl["BOOTPROTO"] in ("none", "static"), name
        assert ctl["IPADDR"] == str(iface.ip), name
        assert ctl.get("NETMASK") == str(iface.netmask) or ctl.get("PREFIX") == str(
            iface.network.prefixlen), name
        assert [ctl[f"DNS{i + 1}"] for i in range(len(exp.dns))] == list(exp.dns), name
        if exp.gateway:
            assert ctl.get("GATEWAY") == exp.gateway and ctl.get("DEFROUTE") == "yes", name
        else:
            assert "GATEWAY" not in ctl, name
            assert not any(k.startswith(f"etc/sysconfig/network-scripts/route-{dev}")
                           for k in files), name
        for mac in exp.dhcp_macs:
            assert by_mac[mac][1]["BOOTPROTO"] == "dhcp", (name, mac)
        assert len(by_mac) == 1 + len(exp.dhcp_macs), name
        assert _udev_names(files) == {m: by_mac[m][0] for m in by_mac}, name
        assert sorted(re.findall(r"^nameserver (\S+)", files["etc/resolv.conf"], re.M)) == \
            sorted(exp.dns), name


def test_eni_rendering(cloudinit: dict[str, Any],
                       seeds: tuple[Path, dict[str, Expected]]) -> None:
    """What Debian's ifupdown gets: /etc/network/interfaces.d plus udev names by MAC."""
    for name, got, exp in each_seed(cloudinit, seeds[1]):
        files = _rendered(got, "eni", name)
        names = _udev_names(files)
        eni = files["etc/network/interfaces.d/50-cloud-init"]
        stanzas = {m.group(1): m.group(0) for m in
                   re.finditer(r"^iface (\S+) inet .*?(?=^auto |^iface |\Z)", eni, re.M | re.S)}
        ctl = stanzas[names[exp.ctl_mac]]
        assert f"iface {names[exp.ctl_mac]} inet static" in ctl, name
        assert f"address {exp.ctl_address}" in ctl, name
        assert f"dns-nameservers {' '.join(exp.dns)}" in ctl, name
        if exp.gateway:
            # ifupdown's own `gateway` line: a route would be rendered as `post-up route add
            # default gw ... || true`, and route(8) (net-tools) is not on Debian's cloud
            # images, so the node silently had no default route (seen on a real guest)
            assert re.search(rf"^\s*gateway {re.escape(exp.gateway)}$", ctl, re.M), (name, ctl)
            assert "post-up route add" not in ctl, (name, ctl)
        else:
            assert "gw " not in ctl and "gateway" not in ctl, name
        for mac in exp.dhcp_macs:
            assert f"iface {names[mac]} inet dhcp" in stanzas[names[mac]], (name, mac)


def test_netplan_rendering(cloudinit: dict[str, Any],
                           seeds: tuple[Path, dict[str, Expected]]) -> None:
    for name, got, exp in each_seed(cloudinit, seeds[1]):
        files = _rendered(got, "netplan", name)
        plan = yaml.safe_load(files["etc/netplan/50-cloud-init.yaml"])["network"]
        assert plan["version"] == 2
        by_mac = {e["match"]["macaddress"]: (n, e) for n, e in plan["ethernets"].items()}
        dev, ctl = by_mac[exp.ctl_mac]
        assert ctl["set-name"] == dev and ctl["addresses"] == [exp.ctl_address], name
        assert ctl["nameservers"]["addresses"] == list(exp.dns), name
        if exp.gateway:  # passed through as gateway4, or as netplan's newer route form
            assert ctl.get("gateway4") == exp.gateway or any(
                r.get("to") in ("0.0.0.0/0", "default") and r.get("via") == exp.gateway
                for r in ctl.get("routes", [])), (name, ctl)
        else:
            assert "routes" not in ctl and "gateway4" not in ctl, name
        for mac in exp.dhcp_macs:
            assert by_mac[mac][1]["dhcp4"] is True, (name, mac)


def test_users_hostname_and_host_keys_as_cloud_init_reads_them(
        cloudinit: dict[str, Any], seeds: tuple[Path, dict[str, Expected]]) -> None:
    for name, got, exp in each_seed(cloudinit, seeds[1]):
        it = got["interpreted"]
        assert "error" not in it, (name, it)
        assert (it["hostname"], it["fqdn"]) == (exp.hostname, exp.fqdn), name
        assert sorted(it["users"]) == sorted(exp.users), name
        for user, cfg in it["users"].items():
            assert exp.lab_key in cfg["ssh_authorized_keys"], (name, user)
            assert cfg["lock_passwd"] is True and cfg["shell"] == "/bin/bash", (name, user)
            assert cfg["sudo"] == "ALL=(ALL) NOPASSWD:ALL", (name, user)
        assert it["ssh_keys_unknown"] == [], name
        assert it["ssh_key_files"] == {
            "ed25519_private": "/etc/ssh/ssh_host_ed25519_key",
            "ed25519_public": "/etc/ssh/ssh_host_ed25519_key.pub",
        }, name
        ud = yaml.safe_load(exp.files["user-data"])
        assert ud["ssh_keys"]["ed25519_public"] == exp.host_key_public
        assert ud["ssh_deletekeys"] is True and ud["ssh_pwauth"] is False
        assert ud["growpart"] == {"mode": "auto", "devices": ["/"]}
        assert ud["resize_rootfs"] is True and ud["manage_etc_hosts"] is True


# --------------------------------------------------------------------------- the checker bites


def test_the_old_default_route_form_is_refused_before_25_3(cloudinit: dict[str, Any]) -> None:
    """`routes: [{to: default}]` -- what labvirt wrote before -- kills the network of every
    node on cloud-init < 25.3 (Debian 12 and 13, CentOS Stream / RHEL 9 and 10): this test
    shows the checks above would have caught it."""
    old = cloudinit["raw"]["old"]
    if version_tuple(cloudinit["version"]) >= (25, 3):
        assert "error" not in old["network-state"]  # accepted since 25.3
        return
    assert "Address default is not a valid ip" in old["network-state"]["error"]
    for kind in ("sysconfig", "eni"):
        result = old["render"][kind]
        assert result["status"] != 0, kind
        assert "Address default is not a valid ip" in result["stderr"], kind


def test_ipv6_default_route(cloudinit: dict[str, Any]) -> None:
    """`::/0` (SeedInterface.gateway6; no labvirt lab uses IPv6 today). Correct from 25.1 on.
    cloud-init 22.4 normalises a route twice and loses the prefix 0 of an IPv6 route the
    second time (an IPv6 route without a prefix defaults to /64), so it renders `::/64 via
    GW`: this test pins that, so that whoever adds IPv6 labs sees it. The only form 22.4
    renders right is the deprecated `gateway6` key (removal announced for 27.4)."""
    v6 = cloudinit["raw"]["v6"]
    assert v6["network-config-schema"] in ([], None)
    assert "error" not in v6["network-state"], v6["network-state"]
    (iface,) = v6["network-state"]["interfaces"].values()
    routes = {(r["network"], r["prefix"], r["gateway"])
              for s in iface["subnets"] for r in s.get("routes", [])}
    files = _rendered(v6, "sysconfig", "v6")
    ifcfg = files["etc/sysconfig/network-scripts/ifcfg-nic0"]
    assert "GATEWAY=192.168.24.1" in ifcfg and "DEFROUTE=yes" in ifcfg, ifcfg
    route6 = files.get("etc/sysconfig/network-scripts/route6-nic0", "")
    if version_tuple(cloudinit["version"]) < (23, 1):
        assert routes == {("::", 64, "fd00:24::1")}
        assert "::/64 via fd00:24::1" in route6, route6
        return
    assert routes == {("::", 0, "fd00:24::1")}
    assert "IPV6_DEFAULTGW=fd00:24::1" in ifcfg or "::/0 via fd00:24::1" in route6, (ifcfg,
                                                                                     route6)


def test_a_schema_error_is_reported(cloudinit: dict[str, Any]) -> None:
    bad = cloudinit["raw"]["bad"]
    assert bad["user-data-schema"] and "growpart.mode" in bad["user-data-schema"][0]
    assert bad["schema-cli"]["status"] != 0
    assert "growpart.mode" in bad["schema-cli"]["stderr"] + bad["schema-cli"]["stdout"]
