"""tiny-init.sh's YAML parser and seed application, run under the image's own busybox."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from labvirt.image.tiny import (
    INIT_SCRIPT,
    TinyImageError,
    build_tiny_image,
    default_cache_dir,
    host_busybox,
)
from labvirt.seed import SeedInterface, SeedSpec, SeedUser, render_seed_files

pytestmark = pytest.mark.unit

PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
    "c2gtZWQyNTUxOQAAACBpjvRNZaROKPT4oiJEynQgLhyqGBIrciA5ca1LgO3GxwAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmO9E1lpE4o9PiiIkTKdCAuHKoYEityIDlxrUuA7cbH"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvOFP2+6LuoGhUm0rdsQAJrj7ZKxNOq8PiMgQO3riZE a@x"
KEY_B = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCxDwd6K3zm b@y"


@pytest.fixture(scope="session")
def busybox_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the image's busybox and its applet links (used as $PATH)."""
    cache = default_cache_dir()
    # The parser only needs busybox: when the whole image cannot be built, try busybox alone.
    with contextlib.suppress(TinyImageError):
        build_tiny_image(cache)
    try:
        busybox = host_busybox(cache)
    except TinyImageError as exc:
        pytest.skip(f"busybox-static is neither cached in {cache} nor downloadable: {exc}")
    bindir = tmp_path_factory.mktemp("busybox-bin")
    subprocess.run([str(busybox), "--install", "-s", str(bindir)], check=True)
    assert (bindir / "awk").exists() and (bindir / "sh").exists()
    return bindir


def tiny_init(bindir: Path, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(bindir / "sh"), str(INIT_SCRIPT), *map(str, args)],
        env={"PATH": str(bindir), "LC_ALL": "C"},
        capture_output=True,
        check=False,
        timeout=60,
    )


def esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def py_flatten(obj: Any) -> list[str]:
    """What yaml_flatten must print for the document that yaml.safe_load read as obj."""
    lines: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{scalar(key)}" if path else scalar(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}" if path else str(i))
        elif node is not None:
            lines.append(f"{esc(path)}\t{esc(scalar(node))}")

    walk(obj, "")
    return lines


def sh_flatten(bindir: Path, path: Path) -> list[str]:
    proc = tiny_init(bindir, "--flatten", path)
    assert proc.returncode == 0, proc.stderr.decode()
    return [line for line in proc.stdout.decode("utf-8").split("\n") if line]


def check_file(bindir: Path, path: Path) -> None:
    expected = py_flatten(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert sh_flatten(bindir, path) == expected


def make_spec(**overrides: Any) -> SeedSpec:
    values: dict[str, Any] = {
        "instance_id": "i-0001",
        "hostname": "oc0-ceph-4",
        "fqdn": "oc0-ceph-4.localdomain",
        "users": (
            SeedUser("stack", (KEY_A, KEY_B)),
            SeedUser("admin2", (KEY_B,)),
            SeedUser("guest", (KEY_A,), sudo=False),
        ),
        "host_keys": {"ed25519": (PRIVATE, PUBLIC), "rsa": ("RSA\nPRIV\n", "ssh-rsa AAAA h")},
        "interfaces": (
            SeedInterface("52:54:00:12:34:56", "mgmt0", dhcp4=True),
            SeedInterface(
                "52:54:00:AA:BB:CC",
                "ctlplane0",
                ("192.168.24.30/24",),
                gateway4="192.168.24.1",
                nameservers=("192.168.24.1", "192.168.24.2"),
            ),
        ),
    }
    values.update(overrides)
    return SeedSpec(**values)


def write_seed(directory: Path, spec: SeedSpec) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in render_seed_files(spec).items():
        (directory / name).write_bytes(data)
    return directory


def test_flatten_rendered_seed(busybox_bin: Path, tmp_path: Path) -> None:
    seed = write_seed(tmp_path / "seed", make_spec())
    for name in ("meta-data", "user-data", "network-config"):
        check_file(busybox_bin, seed / name)
    lines = sh_flatten(busybox_bin, seed / "user-data")
    assert f"users.0.ssh_authorized_keys.1\t{KEY_B}" in lines
    assert f"ssh_keys.ed25519_private\t{esc(PRIVATE)}" in lines


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
    "back\\slash\\n\\t",
    "line1\nline2\n",
    "line1\n\n\nline2\n\n",
    "trailing space \nx",
    "cr\r\nlf\r",
    "unicode é ü \u2028 sep \x85 nel \u00a0 \ufeff \U0001f600",
    "ctrl \x01\x07\x1b",
    "'single'",
    '"double"',
    "&anchor *alias !tag %x @y `z`",
    "{flow: map}",
    "[flow, seq]",
    "$(touch /tmp/labvirt-pwned) `touch /tmp/labvirt-pwned`",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_flatten_hostile_values(busybox_bin: Path, tmp_path: Path, value: str) -> None:
    spec = make_spec(
        instance_id=value,
        hostname=value,
        fqdn=value,
        users=(SeedUser(value, (value, KEY_A)),),
        host_keys={"ed25519": (value + "\n", value)},
        interfaces=(SeedInterface(value, "eth-x", (value,), gateway4=value, nameservers=(value,)),),
    )
    seed = write_seed(tmp_path / "seed", spec)
    for name in ("meta-data", "user-data", "network-config"):
        check_file(busybox_bin, seed / name)


HAND_WRITTEN = """\
#cloud-config
users:
- default
- name: a
  groups:
  - - nested
    - seq
  - plain
strip: |-
  no trailing newline
keep: |+
  text

clip: |
  one
    indented two

  after blank
other: 'it''s'
"quoted key": "esc\\\\aped \\"q\\" \\t tab \\x41 \\u00e9"
'single key': x
empty_list: []
empty_map: {}
nothing: null
tilde: ~
number: 42
colon_in_value: a:b
deep:
  a:
    b:
    - c: 1
      d:
        e: f
    - g
last: |
  at the end
"""


def test_flatten_hand_written(busybox_bin: Path, tmp_path: Path) -> None:
    path = tmp_path / "doc"
    path.write_text(HAND_WRITTEN)
    check_file(busybox_bin, path)


def make_sysnet(directory: Path, nics: dict[str, str]) -> Path:
    for name, mac in nics.items():
        (directory / name).mkdir(parents=True)
        (directory / name / "address").write_text(mac + "\n")
    return directory


def apply(busybox_bin: Path, tmp_path: Path, spec: SeedSpec) -> tuple[Path, str]:
    seed = write_seed(tmp_path / "seed", spec)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "group").write_text("root:x:0:\n")
    sysnet = make_sysnet(
        tmp_path / "sysnet",
        {"lo": "00:00:00:00:00:00", "eth0": "52:54:00:12:34:56", "eth1": "52:54:00:aa:bb:cc"},
    )
    proc = tiny_init(busybox_bin, "--apply-test", seed, root, sysnet)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out
    return root, out


def test_apply_seed(busybox_bin: Path, tmp_path: Path) -> None:
    root, out = apply(busybox_bin, tmp_path, make_spec())
    assert (root / "etc/hostname").read_text() == "oc0-ceph-4\n"
    assert "127.0.1.1\toc0-ceph-4.localdomain oc0-ceph-4\n" in (root / "etc/hosts").read_text()
    assert (root / "etc/passwd").read_text().splitlines() == [
        "stack:*:0:0:stack:/home/stack:/bin/bash",
        "admin2:*:0:0:admin2:/home/admin2:/bin/bash",
        "root:*:0:0:root:/root:/bin/sh",
        "guest:*:1002:1002:guest:/home/guest:/bin/bash",
    ]
    # the passwd admin2's sessions see: admin2 first, so whoami prints admin2
    assert (root / "run/labvirt/passwd.admin2").read_text().splitlines()[0].startswith("admin2:")
    assert not (root / "run/labvirt/passwd.stack").exists()
    assert (root / "run/labvirt/passwd.root").read_text().splitlines()[0].startswith("root:")
    assert "guest:x:1002:" in (root / "etc/group").read_text()
    keys = root / "home/stack/.ssh/authorized_keys"
    assert keys.read_text() == f"{KEY_A}\n{KEY_B}\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert (root / "home/stack/.ssh").stat().st_mode & 0o777 == 0o700
    assert (root / "home/guest/.ssh/authorized_keys").read_text() == f"{KEY_A}\n"
    assert (root / "etc/dropbear/openssh_ed25519_host_key").read_text() == PRIVATE
    assert (root / "etc/dropbear/openssh_ed25519_host_key").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/dropbear/openssh_ed25519_host_key.pub").read_text() == PUBLIC + "\n"
    assert (root / "etc/dropbear/openssh_rsa_host_key").read_text() == "RSA\nPRIV\n"
    assert not (root / "etc/dropbear/openssh_ecdsa_host_key").exists()
    assert (root / "etc/resolv.conf").read_text() == (
        "nameserver 192.168.24.1\nnameserver 192.168.24.2\n"
    )
    commands = [line[5:] for line in out.splitlines() if line.startswith("run: ")]
    assert commands == [
        "hostname oc0-ceph-4",
        "ip link set dev lo up",
        "ip link set dev eth0 down",
        "ip link set dev eth0 name mgmt0",
        "ip link set dev mgmt0 up",
        "udhcpc -i mgmt0 -s /etc/udhcpc/default.script -t 5 -T 1 -b -x hostname:oc0-ceph-4",
        "ip link set dev eth1 down",
        "ip link set dev eth1 name ctlplane0",
        "ip link set dev ctlplane0 up",
        "ip addr add 192.168.24.30/24 dev ctlplane0",
        "ip route replace default via 192.168.24.1 dev ctlplane0",
    ]
    assert (root / "etc/udhcpc/default.script").stat().st_mode & 0o111


def test_apply_unknown_mac_is_skipped(busybox_bin: Path, tmp_path: Path) -> None:
    spec = make_spec(interfaces=(SeedInterface("52:54:00:99:99:99", "x0", ("10.9.9.9/24",)),))
    _root, out = apply(busybox_bin, tmp_path, spec)
    assert "no interface with MAC 52:54:00:99:99:99" in out
    assert "ip addr add" not in out


def test_apply_hostile_values_stay_data(busybox_bin: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = f"x$(touch {marker})`touch {marker}`;touch {marker}\nhostname: y"
    spec = make_spec(
        hostname=evil,
        fqdn=evil,
        users=(
            SeedUser("../../etc", (KEY_A,)),
            SeedUser(f"a;touch {marker}", (KEY_A,)),
            SeedUser("ok", (f"{KEY_A}\n{evil}",)),
        ),
        host_keys={},
        interfaces=(SeedInterface("52:54:00:12:34:56", "m *", (evil,), gateway4=evil),),
    )
    root, out = apply(busybox_bin, tmp_path, spec)
    assert not marker.exists()
    # seed values reach commands as single arguments: no word splitting, no globbing
    assert "run: ip link set dev eth0 name m *\n" in out
    assert f"run: ip addr add {evil} dev m *\n" in out
    assert (root / "etc/hostname").read_text() == evil + "\n"
    assert (root / "etc/passwd").read_text().splitlines() == [
        "ok:*:0:0:ok:/home/ok:/bin/bash",
        "root:*:0:0:root:/root:/bin/sh",
    ]
    # a key with an embedded newline stays one line: it cannot add another key
    assert len((root / "home/ok/.ssh/authorized_keys").read_text().splitlines()) == 1
    assert not (tmp_path / "etc").exists()


# --- the initramfs itself -------------------------------------------------------------------


def read_cpio(data: bytes) -> dict[str, tuple[int, int, int, int, bytes, tuple[int, int]]]:
    """path -> (mode, uid, gid, mtime, data, rdev) of a cpio newc archive."""
    entries: dict[str, tuple[int, int, int, int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", pos
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        _ino, mode, uid, gid, _nlink, mtime, size, _dmaj, _dmin, rmaj, rmin, namesize, _c = fields
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries
        entries[name] = (mode, uid, gid, mtime, body, (rmaj, rmin))


def test_cpio_newc_format() -> None:
    from labvirt.image.tiny import CPIO_MTIME, cpio_newc

    archive = cpio_newc(
        [
            ("d", 0o040755, b"", (0, 0)),
            ("d/f", 0o100644, b"hello", (0, 0)),
            ("d/l", 0o120777, b"/d/f", (0, 0)),
            ("c", 0o020600, b"", (5, 1)),
        ]
    )
    assert len(archive) % 4 == 0
    assert archive == cpio_newc(
        [
            ("d", 0o040755, b"", (0, 0)),
            ("d/f", 0o100644, b"hello", (0, 0)),
            ("d/l", 0o120777, b"/d/f", (0, 0)),
            ("c", 0o020600, b"", (5, 1)),
        ]
    )
    got = read_cpio(archive)
    assert got == {
        "d": (0o040755, 0, 0, CPIO_MTIME, b"", (0, 0)),
        "d/f": (0o100644, 0, 0, CPIO_MTIME, b"hello", (0, 0)),
        "d/l": (0o120777, 0, 0, CPIO_MTIME, b"/d/f", (0, 0)),
        "c": (0o020600, 0, 0, CPIO_MTIME, b"", (5, 1)),
    }


def test_built_initrd_content(busybox_bin: Path) -> None:
    import gzip

    try:
        image = build_tiny_image(default_cache_dir())
    except TinyImageError as exc:
        pytest.skip(f"tiny image cannot be built here: {exc}")
    raw = image.initrd.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip, mtime 0
    files = read_cpio(gzip.decompress(raw))
    assert files["init"][4] == INIT_SCRIPT.read_bytes()
    assert files["init"][0] & 0o111
    assert {(uid, gid, mtime) for _m, uid, gid, mtime, _d, _r in files.values()} == {
        (0, 0, files["init"][3])
    }
    assert files["bin/sh"][4] == b"/bin/busybox"
    assert files["dev/console"][0] == 0o020600 and files["dev/console"][5] == (5, 1)
    for rel in ("usr/sbin/dropbear", "usr/bin/dropbearconvert", "lib64/ld-linux-x86-64.so.2"):
        assert files[rel][4][:4] == b"\x7fELF", rel
    libs = {p.rsplit("/", 1)[1] for p in files if p.startswith("lib/x86_64-linux-gnu/")}
    for lib in ("libc.so.6", "libtomcrypt.so.1", "libtommath.so.1", "libgmp.so.10", "libz.so.1"):
        assert lib in libs
    # Ansible's modules need the node's Python: the interpreter, its libraries, a sourceless
    # precompiled stdlib (hash-checked pycs), no OpenSSL
    assert files["usr/bin/python3"][4] == b"python3.11"
    assert files["usr/bin/python3.11"][4][:4] == b"\x7fELF"
    for mod in ("os", "json/__init__", "subprocess", "zipfile", "encodings/utf_8"):
        pyc = files[f"usr/lib/python3.11/{mod}.pyc"][4]
        assert pyc[4:8] == b"\x01\0\0\0", mod  # hash-based, unchecked: no mtime inside
    assert not any(p.endswith(".py") for p in files)
    assert not any("_ssl." in p or "_hashlib." in p for p in files)
    assert {"libexpat.so.1", "libffi.so.8"} <= libs
    order = files["lib/modules/load-order"][4].decode().split()
    for module in order:
        assert files[f"lib/modules/{module}.ko"][4][:4] == b"\x7fELF"  # uncompressed
    for before, after in (
        ("virtio_ring", "virtio"),
        ("virtio", "virtio_pci"),
        ("virtio_pci_modern_dev", "virtio_pci"),
        ("failover", "net_failover"),
        ("net_failover", "virtio_net"),
        ("scsi_mod", "sr_mod"),
        ("cdrom", "sr_mod"),
        ("libata", "ata_piix"),
    ):
        assert order.index(before) < order.index(after), (before, after)
    assert {"virtio_blk", "virtio_net", "virtio_scsi", "ata_piix", "isofs"} <= set(order)
    # the version is the content hash: a second (cached) call gives the same image
    assert build_tiny_image(default_cache_dir()) == image
