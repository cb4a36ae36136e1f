"""Reading overrides files: layering like `ansible-playbook -e @A -e @B`, the default
layout, the embedded seed lab, and the tripleo-lab keys that must pass silently."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from clitools import REPO, labvirt

from labvirt.errors import LayoutErrors
from labvirt.layout.loader import load_layers
from labvirt.layout.spec import GIB, MIB, LayoutSpec, parse_size, read_layout
from labvirt.model import build_lab
from labvirt.resources import default_layout
from labvirt.session import resolve_layout_files

pytestmark = pytest.mark.unit

GLANCE = REPO / "overrides" / "glance-dcn.yml"
TINY = REPO / "overrides" / "tiny.yml"
SEED_STACKS = [
    ("central-ceph", "CephAll", ["oc0-ceph-0", "oc0-ceph-1", "oc0-ceph-2"]),
    ("control-plane", "Controller", ["oc0-controller-0", "oc0-controller-1", "oc0-controller-2"]),
    ("central-compute", "Compute", ["oc0-ceph-3"]),
    ("dcn0", "DistributedComputeHCI", ["oc0-ceph-4"]),
    ("dcn1", "DistributedComputeHCI", ["oc0-ceph-5"]),
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def spec_of(*paths: Path) -> LayoutSpec:
    return read_layout(load_layers(list(paths)))


# --- layering ---------------------------------------------------------------------------

def test_later_top_level_key_wins_and_others_stay(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", """\
        vm_prefix: first
        num_osds: 3
        vms: [{name: undercloud}, {name: ceph-0}]
        """)
    b = write(tmp_path, "b.yml", "vm_prefix: second\n")
    spec = spec_of(a, b)
    assert spec.vm_prefix == "second"
    assert spec.num_osds == 3  # only in the first file: kept
    assert spec.sources == (str(a), str(b))
    assert spec_of(b, a).vm_prefix == "first"  # order decides, not file names


def test_later_vms_list_replaces_the_whole_list(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", """\
        vms:
          - {name: undercloud, cpu: 8}
          - {name: ceph-0}
          - {name: ceph-1}
        """)
    b = write(tmp_path, "b.yml", "vms: [{name: undercloud}, {name: compute-0, cpu: 3}]\n")
    spec = spec_of(a, b)
    assert [vm.name for vm in spec.vms] == ["undercloud", "compute-0"]
    assert spec.vms[0].cpu == 1  # not merged with the first file's undercloud entry
    assert spec.vms[1].cpu == 3


def test_labvirt_section_deep_merges(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", """\
        vms: [{name: undercloud}, {name: ceph-0}, {name: ceph-1}]
        labvirt:
          domain_type: kvm
          ctlplane: {cidr: 10.1.0.0/24, first_ip: 10.1.0.50}
          stacks:
            - {name: one, role: Compute, nodes: [oc0-ceph-0]}
            - {name: two, role: Compute, nodes: [oc0-ceph-1]}
        """)
    b = write(tmp_path, "b.yml", """\
        labvirt:
          domain_type: qemu
          ctlplane: {first_ip: 10.1.0.60}
        """)
    lv = spec_of(a, b).labvirt
    assert lv.domain_type == "qemu"
    assert str(lv.ctlplane.cidr) == "10.1.0.0/24"  # sibling key of the first file kept
    assert str(lv.ctlplane.first_ip) == "10.1.0.60"
    assert [s.name for s in lv.stacks] == ["one", "two"]
    # a list inside labvirt: is a value like any other: a later one replaces it
    c = write(tmp_path, "c.yml", "labvirt: {stacks: [{name: three, role: Compute}]}\n")
    assert [s.name for s in spec_of(a, c).labvirt.stacks] == ["three"]


def test_tiny_over_glance_dcn_keeps_the_five_stacks_and_nodes() -> None:
    base, demo = spec_of(GLANCE), spec_of(GLANCE, TINY)
    assert demo.labvirt.stacks == base.labvirt.stacks
    assert [(s.name, s.role, [m.node for m in s.members]) for s in demo.labvirt.stacks] == (
        SEED_STACKS)
    assert demo.vms == base.vms
    assert demo.labvirt.ctlplane == base.labvirt.ctlplane
    assert demo.labvirt.name == "glance-dcn"
    # and tiny's own settings apply
    assert (demo.labvirt.domain_type, demo.labvirt.access, demo.labvirt.image) == (
        "qemu", "forward", "tiny")
    assert demo.labvirt.networks["default"].forward == "isolated"
    assert demo.labvirt.networks["default"].cidr is None
    assert (demo.uefi, demo.num_osds) == (False, 2)


def test_error_in_a_replaced_key_names_the_layer_it_came_from(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", "vms: [{name: undercloud}, {name: ceph-0}]\n")
    b = write(tmp_path, "b.yml",
              "# the second layer\nvms:\n  - name: undercloud\n  - name: ceph-0\n    cpu: -1\n")
    with pytest.raises(LayoutErrors) as info:
        spec_of(a, b)
    [error] = info.value.errors
    assert (error.location.file, error.location.line) == (str(b), 5)


def test_error_in_labvirt_names_the_layer_that_set_the_value(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", """\
        vms: [{name: undercloud}, {name: ceph-0}]
        labvirt: {domain_type: qemu, boot: image}
        """)
    b = write(tmp_path, "b.yml", "\nlabvirt:\n  boot: floppy\n")
    with pytest.raises(LayoutErrors) as info:
        spec_of(a, b)
    [error] = info.value.errors
    assert (error.location.file, error.location.line, error.location.key) == (
        str(b), 3, "labvirt.boot")


# --- which files --------------------------------------------------------------------------

def test_no_file_reads_local_overrides_yml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_layout_files([]) == [default_layout()]
    local = write(tmp_path, "overrides.yml", "vms: [{name: undercloud}, {name: ceph-0}]\n")
    assert resolve_layout_files([]) == [Path.cwd() / "overrides.yml"]
    assert resolve_layout_files([GLANCE]) == [GLANCE]  # -f wins over ./overrides.yml
    assert local.is_file()


def test_no_file_through_the_cli(tmp_path: Path) -> None:
    """The real entry point picks ./overrides.yml, else the embedded default."""
    shown = json.loads(labvirt("show", "--format", "json", cwd=tmp_path).stdout)
    assert shown["lab"]["sources"] == [str(default_layout())]
    assert shown["lab"]["name"] == "glance-dcn"
    write(tmp_path, "overrides.yml", "vm_prefix: mine\nvms: [{name: undercloud}, {name: ceph-0}]\n")
    shown = json.loads(labvirt("show", "--format", "json", cwd=tmp_path).stdout)
    assert shown["lab"]["sources"] == [str(tmp_path / "overrides.yml")]
    assert [n["hostname"] for n in shown["nodes"]] == ["undercloud", "oc0-ceph-0"]


def test_embedded_default_is_the_shipped_glance_dcn_file() -> None:
    assert default_layout().read_bytes() == GLANCE.read_bytes()


def test_embedded_default_is_the_seed_lab() -> None:
    lab = build_lab(spec_of(default_layout()))
    expected = ["undercloud", *(f"oc0-controller-{i}" for i in range(3)),
                *(f"oc0-ceph-{i}" for i in range(6))]
    assert [n.hostname for n in lab.nodes] == expected
    sizes = {n.hostname: (n.cpu, n.memory_kib) for n in lab.nodes}
    # memory is in libvirt's MB (10^6 bytes): 16384 MB is 16000000 KiB
    assert sizes["undercloud"] == (4, 16_000_000)
    for i in range(3):
        assert sizes[f"oc0-controller-{i}"] == (2, 4_000_000)
    for i in range(6):
        assert sizes[f"oc0-ceph-{i}"] == (2, 6_000_000)
    assert [(s.name, s.role, list(s.nodes)) for s in lab.stacks] == SEED_STACKS
    for s in lab.stacks:
        assert all(m.role == s.role for m in s.members)
    assert lab.name == "glance-dcn"
    assert lab.prefix == "lab"
    # undercloud: one NIC on the NAT network, one on the ctlplane; others two on ctlplane
    assert [nic.network for nic in lab.node("undercloud").nics] == ["default", "ctlplane"]
    assert [nic.network for nic in lab.node("oc0-ceph-4").nics] == ["ctlplane", "ctlplane"]


# --- tripleo-lab keys labvirt does not read -----------------------------------------------

TRIPLEO_LAB_NOISE = """\
    # a real overrides file carries dozens of keys for the rest of tripleo-lab
    tripleo_repos_branch: wallaby
    os_version: 9
    python_interpreter: /usr/bin/python3
    container_prepare_ceph: true
    container_prepare_params:
      - push_destination: true
        set: {namespace: quay.io/tripleowallaby, tag: current-tripleo}
    undercloud_config:
      - {section: DEFAULT, option: undercloud_timezone, value: UTC}
      - {section: ctlplane-subnet, option: masquerade, value: true}
    deploy_undercloud: true
    undercloud_hostname: undercloud.localdomain
    use_heat: false
    ansible_become: true
    lab_users: [{name: me, key: ssh-ed25519 AAAA}]
    vms:
      - name: undercloud
        cpu: 4
        memory: 16384
        autostart: true
        interfaces:
          - network: default
          - mac: "24:42:53:21:52:01"
      - name: ceph-0
        autostart: false
        interfaces:
          - mac: "24:42:53:21:52:20"
          - mac: "24:42:53:21:52:21"
    """


def test_other_tripleo_lab_keys_pass_silently(tmp_path: Path) -> None:
    path = write(tmp_path, "overrides.yml", TRIPLEO_LAB_NOISE)
    proc = labvirt("-f", path, "show", "--format", "json", cwd=tmp_path)
    assert proc.stderr == ""  # no error and no warning
    shown = json.loads(proc.stdout)
    assert [n["hostname"] for n in shown["nodes"]] == ["undercloud", "oc0-ceph-0"]
    spec = spec_of(path)
    assert spec.warnings == ()
    assert [vm.autostart for vm in spec.vms] == [True, False]
    assert spec.vms[1].interfaces[1].mac == "24:42:53:21:52:21"


def test_unknown_key_in_a_vm_entry_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "o.yml", "vms: [{name: undercloud}, {name: ceph-0, cpus: 4}]\n")
    proc = labvirt("-f", path, "show", "--format", "json", cwd=tmp_path)
    assert proc.stderr == (f"warning: {path}:1: vms[1].cpus (VM ceph-0): key 'cpus' is not read "
                           "by labvirt (did you mean 'cpu'?)\n")


# --- small parsers ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "unit", "expected"), [
    ("10G", GIB, 10 * GIB),
    ("512MiB", MIB, 512 * MIB),
    ("256MiB", 1000**2, 256 * MIB),
    ("2GiB", GIB, 2 * GIB),
    ("2GB", GIB, 2 * 1000**3),
    ("4096MB", 1000**2, 4096 * 1000**2),
    (4096, 1000**2, 4096 * 1000**2),  # a bare number is in the key's own unit
    ("1.5G", GIB, int(1.5 * GIB)),
])
def test_parse_size(text: str | int, unit: int, expected: int) -> None:
    assert parse_size(text, unit) == expected


@pytest.mark.parametrize("bad", ["ten", "10 parsecs", "-1G", True, [1], "10G\n5"])
def test_parse_size_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad, GIB)


# --- reading any file in bounded time and memory ----------------------------------------

def _refused(path: Path) -> str:
    from labvirt.errors import LayoutError

    with pytest.raises(LayoutError) as info:
        load_layers([path])
    assert info.value.exit_code == 2
    return info.value.render()


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "layout.yml"
    os.mkfifo(fifo)
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(_refused(fifo)), daemon=True)
    worker.start()
    worker.join(30)  # a limit only: the refusal comes from stat, not from a wait
    if worker.is_alive():  # unblock the reader before failing, or the test run hangs
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert "a FIFO (named pipe), not a file" in result[0]
    assert "give -f a YAML file" in result[0]


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a device"), ("/", "a directory")])
def test_devices_and_directories_are_refused(path: str, kind: str) -> None:
    assert f"error: {path}: the layout is {kind}, not a file" in _refused(Path(path))


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    from labvirt.layout.loader import MAX_LAYOUT_BYTES

    big = tmp_path / "big.yml"
    with big.open("wb") as f:  # sparse: the bound is checked before reading
        f.truncate(MAX_LAYOUT_BYTES + 1)
    assert "larger than 1024 KiB" in _refused(big)


def test_a_file_of_exactly_the_bound_is_read(tmp_path: Path) -> None:
    from labvirt.layout.loader import MAX_LAYOUT_BYTES

    text = "vms: [{name: undercloud}, {name: ceph-0}]\n"
    path = tmp_path / "padded.yml"
    path.write_text(text + "#" * (MAX_LAYOUT_BYTES - len(text) - 1) + "\n")
    assert [vm.name for vm in spec_of(path).vms] == ["undercloud", "ceph-0"]


def test_a_symlink_to_a_layout_is_read(tmp_path: Path) -> None:
    real = write(tmp_path, "real.yml", "vms: [{name: undercloud}, {name: ceph-0}]\n")
    link = tmp_path / "link.yml"
    link.symlink_to(real)
    assert len(spec_of(link).vms) == 2


def test_anchors_and_merge_keys_are_still_read(tmp_path: Path) -> None:
    """Aliases are bounded, not banned: tripleo-lab files share VM settings with them."""
    path = write(tmp_path, "anchors.yml", """\
        ceph: &ceph {cpu: 2, memory: 6144}
        vms:
          - name: undercloud
          - {<<: *ceph, name: ceph-0}
          - {<<: *ceph, name: ceph-1, cpu: 4}
        """)
    spec = spec_of(path)
    assert [(vm.name, vm.cpu, vm.memory_mb) for vm in spec.vms[1:]] == [
        ("ceph-0", 2, 6144), ("ceph-1", 4, 6144)]


def test_nesting_up_to_the_bound_is_read(tmp_path: Path) -> None:
    from labvirt.layout.loader import MAX_DEPTH

    deep = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    path = write(tmp_path, "deep.yml", f"vms: [{{name: undercloud}}, {{name: ceph-0}}]\n"
                                       f"extra: {deep}\n")
    assert len(spec_of(path).vms) == 2
    path.write_text(path.read_text().replace(deep, f"[{deep}]"))
    assert "nested more than" in _refused(path)


def test_aliases_nested_through_each_other_count_their_depth(tmp_path: Path) -> None:
    """Each anchor is shallow; referring to each other, they would still nest deeply."""
    lines = ["a0: &a0 " + "[" * 10 + "]" * 10]
    lines += [f"a{i}: &a{i} " + "[" * 9 + f"*a{i - 1}" + "]" * 9 for i in range(1, 10)]
    path = write(tmp_path, "chain.yml", "\n".join(lines) + "\nvms: [{name: undercloud}]\n")
    assert "with its aliases expanded, this value is nested more than" in _refused(path)
