"""labvirt.seed: rendered NoCloud files and the cidata ISO."""

from __future__ import annotations

import io
import time

import pycdlib
import pytest
import yaml

from labvirt.seed import (
    SUDO_NOPASSWD,
    SeedError,
    SeedInterface,
    SeedSpec,
    SeedUser,
    build_seed_iso,
    render_seed_files,
)

pytestmark = pytest.mark.unit

PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
    "c2gtZWQyNTUxOQAAACBpjvRNZaROKPT4oiJEynQgLhyqGBIrciA5ca1LgO3GxwAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmO9E1lpE4o9PiiIkTKdCAuHKoYEityIDlxrUuA7cbH"
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvOFP2+6LuoGhUm0rdsQAJrj7ZKxNOq8PiMgQO3riZE me@x"


def make_spec(**overrides: object) -> SeedSpec:
    values: dict[str, object] = {
        "instance_id": "oc0-ceph-4-0001",
        "hostname": "oc0-ceph-4",
        "fqdn": "oc0-ceph-4.localdomain",
        "users": (
            SeedUser("stack", (USER_KEY, "ssh-rsa AAAAB3Nza other@y")),
            SeedUser("guest", (USER_KEY,), sudo=False),
        ),
        "host_keys": {"ed25519": (PRIVATE, PUBLIC), "rsa": ("RSA-PRIV\n", "ssh-rsa AAAA h")},
        "interfaces": (
            SeedInterface("52:54:00:12:34:56", "mgmt0", dhcp4=True),
            SeedInterface(
                "52:54:00:aa:bb:cc",
                "ctlplane0",
                ("192.168.24.30/24", "192.168.24.31/24"),
                gateway4="192.168.24.1",
                nameservers=("192.168.24.1", "192.168.24.2"),
            ),
        ),
    }
    values.update(overrides)
    return SeedSpec(**values)  # type: ignore[arg-type]


def load(files: dict[str, bytes], name: str) -> dict:
    return yaml.safe_load(files[name].decode("utf-8"))


def test_file_names() -> None:
    assert sorted(render_seed_files(make_spec())) == ["meta-data", "network-config", "user-data"]


def test_meta_data() -> None:
    meta = load(render_seed_files(make_spec()), "meta-data")
    assert meta == {"instance-id": "oc0-ceph-4-0001", "local-hostname": "oc0-ceph-4"}


def test_user_data() -> None:
    files = render_seed_files(make_spec())
    text = files["user-data"].decode()
    assert text.startswith("#cloud-config\n")
    data = load(files, "user-data")
    assert data["hostname"] == "oc0-ceph-4"
    assert data["fqdn"] == "oc0-ceph-4.localdomain"
    assert data["manage_etc_hosts"] is True
    assert data["ssh_pwauth"] is False
    assert data["ssh_deletekeys"] is True
    assert data["growpart"] == {"mode": "auto", "devices": ["/"]}
    assert data["resize_rootfs"] is True
    assert data["users"] == [
        {
            "name": "stack",
            "sudo": SUDO_NOPASSWD,
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": [USER_KEY, "ssh-rsa AAAAB3Nza other@y"],
        },
        {
            "name": "guest",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": [USER_KEY],
        },
    ]
    assert data["ssh_keys"] == {
        "ed25519_private": PRIVATE,
        "ed25519_public": PUBLIC,
        "rsa_private": "RSA-PRIV\n",
        "rsa_public": "ssh-rsa AAAA h",
    }
    # block style, PEM as a literal block, no folded lines
    assert "  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n" in text
    assert "{" not in text and "[" not in text


def test_network_config() -> None:
    net = load(render_seed_files(make_spec()), "network-config")
    assert net == {
        "version": 2,
        "ethernets": {
            "mgmt0": {
                "match": {"macaddress": "52:54:00:12:34:56"},
                "set-name": "mgmt0",
                "dhcp4": True,
            },
            "ctlplane0": {
                "match": {"macaddress": "52:54:00:aa:bb:cc"},
                "set-name": "ctlplane0",
                "addresses": ["192.168.24.30/24", "192.168.24.31/24"],
                "dhcp4": False,
                "gateway4": "192.168.24.1",
                "nameservers": {"addresses": ["192.168.24.1", "192.168.24.2"]},
            },
        },
    }


def test_default_routes_are_gateway4_and_cidrs_never_the_word_default() -> None:
    # cloud-init < 25.3 rejects `to: default` (the whole network-config is dropped); an
    # IPv4 route would reach Debian's ifupdown as a route(8) call that is not there
    spec = make_spec(interfaces=(SeedInterface(
        "52:54:00:12:34:56", "a", ("192.168.24.30/24", "fd00::5/64"),
        gateway4="192.168.24.1", gateway6="fd00::1"),))
    files = render_seed_files(spec)
    net = load(files, "network-config")
    assert net["ethernets"]["a"]["gateway4"] == "192.168.24.1"
    assert net["ethernets"]["a"]["routes"] == [{"to": "::/0", "via": "fd00::1"}]
    assert b"default" not in files["network-config"]


def test_mac_is_lowercased_and_stays_a_string() -> None:
    spec = make_spec(interfaces=(SeedInterface("52:54:00:12:34:56", "a", dhcp4=True),))
    net = load(render_seed_files(spec), "network-config")
    # 52:54:00:12:34:56 would be a YAML 1.1 sexagesimal int if written plain
    assert net["ethernets"]["a"]["match"]["macaddress"] == "52:54:00:12:34:56"
    spec = make_spec(interfaces=(SeedInterface("52:54:00:AA:BB:CC", "a", dhcp4=True),))
    net = load(render_seed_files(spec), "network-config")
    assert net["ethernets"]["a"]["match"]["macaddress"] == "52:54:00:aa:bb:cc"


def test_duplicate_interface_name_is_an_error() -> None:
    iface = SeedInterface("52:54:00:12:34:56", "a", dhcp4=True)
    with pytest.raises(SeedError, match="used twice"):
        render_seed_files(make_spec(interfaces=(iface, iface)))


def test_unknown_host_key_type_is_an_error() -> None:
    with pytest.raises(SeedError, match="unsupported host key"):
        render_seed_files(make_spec(host_keys={"dsa": ("x", "y")}))


def test_no_host_keys_no_ssh_keys() -> None:
    data = load(render_seed_files(make_spec(host_keys={})), "user-data")
    assert "ssh_keys" not in data


def test_deterministic_files() -> None:
    a = render_seed_files(make_spec())
    b = render_seed_files(make_spec())
    assert a == b
    # host key order in the dict does not matter
    spec = make_spec()
    reordered = make_spec(host_keys=dict(reversed(list(spec.host_keys.items()))))
    assert render_seed_files(reordered) == a


HOSTILE = [
    "evil'\"\nhostname: pwned\nusers: []",
    "a: b",
    "- x",
    "#comment",
    "| block",
    "null",
    "true",
    "0123",
    "  leading and trailing  ",
    "tab\there",
    "back\\slash\\n",
    "line1\nline2\n",
    "line1\n\n\nline2\n\n",
    "trailing space \nx",
    "cr\r\nlf",
    "unicode é ü \u2028 sep \x85 nel",
    "'single'",
    '"double"',
    "&anchor *alias !tag",
    "{flow: map}",
    "[flow, seq]",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_round_trip(value: str) -> None:
    spec = make_spec(
        instance_id=value,
        hostname=value,
        fqdn=value,
        users=(SeedUser(value, (value, "ssh-ed25519 AAAA ok")),),
        host_keys={"ed25519": (value + "\n", value)},
        interfaces=(
            SeedInterface(
                value, "eth-" + value[:3], (value,), gateway4=value, nameservers=(value,)
            ),
        ),
    )
    files = render_seed_files(spec)
    meta = load(files, "meta-data")
    assert meta == {"instance-id": value, "local-hostname": value}
    data = load(files, "user-data")
    assert set(data) == {
        "hostname",
        "fqdn",
        "manage_etc_hosts",
        "users",
        "ssh_pwauth",
        "ssh_deletekeys",
        "growpart",
        "resize_rootfs",
        "ssh_keys",
    }
    assert data["hostname"] == value
    assert data["fqdn"] == value
    assert len(data["users"]) == 1
    assert data["users"][0]["name"] == value
    assert data["users"][0]["ssh_authorized_keys"] == [value, "ssh-ed25519 AAAA ok"]
    assert data["ssh_keys"]["ed25519_private"] == value + "\n"
    assert data["ssh_keys"]["ed25519_public"] == value.strip()
    net = load(files, "network-config")
    (iface,) = net["ethernets"].values()
    assert iface["match"]["macaddress"] == value.lower()
    assert iface["addresses"] == [value]
    if value:  # an empty gateway means no default route
        assert iface["gateway4"] == value
    else:
        assert "gateway4" not in iface
    assert "routes" not in iface
    assert iface["nameservers"] == {"addresses": [value]}


def test_hostile_interface_name_round_trips() -> None:
    name = "x\ny: 1"
    spec = make_spec(interfaces=(SeedInterface("52:54:00:00:00:01", name, dhcp4=True),))
    net = load(render_seed_files(spec), "network-config")
    assert list(net["ethernets"]) == [name]
    assert net["ethernets"][name]["set-name"] == name


def read_iso(data: bytes) -> tuple[str, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for name in ("meta-data", "user-data", "network-config"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
            joliet = io.BytesIO()
            iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
            assert joliet.getvalue() == files[name]
        names = sorted(
            iso.get_record(rr_path=f"/{n}").rock_ridge.name().decode()
            for n in ("meta-data", "user-data", "network-config")
        )
        assert names == ["meta-data", "network-config", "user-data"]
        children = [c for c in iso.list_children(rr_path="/") if not (c.is_dot() or c.is_dotdot())]
        assert len(children) == 3
    finally:
        iso.close()
    return label, files


def test_iso_readable_back() -> None:
    files = render_seed_files(make_spec())
    label, got = read_iso(build_seed_iso(files))
    assert label == "cidata"
    assert got == files


def test_iso_deterministic_across_clock_and_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    files = render_seed_files(make_spec())
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    first = build_seed_iso(files)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.5)
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        second = build_seed_iso(files)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert first == second
    assert build_seed_iso(files) == first
    assert first[0x8001:0x8006] == b"CD001"


def test_iso_differs_when_content_differs() -> None:
    a = build_seed_iso(render_seed_files(make_spec()))
    b = build_seed_iso(render_seed_files(make_spec(hostname="other")))
    assert a != b


def test_iso_rejects_bad_file_names() -> None:
    with pytest.raises(SeedError):
        build_seed_iso({"a/b": b"x"})
