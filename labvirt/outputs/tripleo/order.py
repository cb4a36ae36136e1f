"""The seed's Glance multistore experiment as one command sequence, for the stacks as they
are now (after `labvirt assign`, the sequence follows).

What each stack is comes from its roles: a stack of Ceph roles only is an external Ceph
cluster, a Controller stack the control plane, a Compute stack central compute, a
DistributedCompute* stack an edge site. The order is the seed's: the external Ceph cluster
first, then the control plane using it, central compute, every edge site with its own Ceph,
and last the control-plane update that adds the edge Ceph clusters as Glance stores.

Every deploy uses path B (the stack's deployed-server-environment.yaml with -e): it needs
nothing from the undercloud's Neutron and is what `overcloud ceph deploy` reads anyway.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from labvirt.model import Lab, Stack

CEPH, CONTROL, CENTRAL, EDGE, OTHER = "ceph", "control", "central", "edge", "other"
STEP_ORDER = (CEPH, CONTROL, CENTRAL, EDGE, OTHER)
CEPHADM_RBD = "environments/cephadm/cephadm-rbd-only.yaml"
EXTERNAL_CEPH = "environments/external-ceph.yaml"
DCN_STORAGE = "environments/dcn-storage.yaml"
DCN = "environments/dcn.yaml"
# the name the central Ceph cluster has in every client's /etc/ceph and in Glance
CENTRAL_CLUSTER = "central"


def stack_kind(stack: Stack) -> str:
    roles = stack.roles()
    if any(r.startswith("Controller") for r in roles):
        return CONTROL
    if any(r.startswith("DistributedCompute") for r in roles):
        return EDGE
    if any(r.startswith("Compute") for r in roles):
        return CENTRAL
    if roles and all(r.startswith("Ceph") for r in roles):
        return CEPH
    return OTHER


def hci(stack: Stack) -> bool:
    return any("HCI" in r or r.startswith("Ceph") for r in stack.roles())


def stack_environments(stack: Stack) -> tuple[str, ...]:
    """The THT environments (relative to the templates) the deploy of this stack passes."""
    kind = stack_kind(stack)
    if kind == CEPH:
        return (CEPHADM_RBD,)
    if kind in (CONTROL, CENTRAL):
        return (EXTERNAL_CEPH,)
    if kind == EDGE:
        return (CEPHADM_RBD, DCN_STORAGE) if hci(stack) else (EXTERNAL_CEPH, DCN)
    return ()


B = "$BUNDLE"
WD = "$HOME/overcloud-deploy"
THT_VAR = "$THT"
# THT environments the bundle carries resolved (Wallaby's has a wrong relative path)
BUNDLED = {EXTERNAL_CEPH: "external-ceph.yaml"}


def environment_path(stack: str, env: str) -> str:
    if env in BUNDLED:
        return f"{B}/{stack}/{BUNDLED[env]}"
    return f"{THT_VAR}/{env}"


@dataclass(frozen=True)
class Step:
    title: str
    commands: tuple[tuple[str, ...], ...]  # argv lists; $VARS expand in the script


def _deploy(stack: Stack, *extra: str) -> tuple[str, ...]:
    s = stack.name
    envs = [a for env in stack_environments(stack) for a in ("-e", environment_path(s, env))]
    return ("openstack", "overcloud", "deploy", "--templates", "--stack", s,
            "--deployed-server", "--overcloud-ssh-user", "$SSH_USER",
            "--overcloud-ssh-key", "$SSH_KEY",
            "-r", f"{B}/{s}/roles_data.yaml",
            "-n", f"{THT_VAR}/network-data-samples/no-networks.yaml",
            "-e", f"{B}/{s}/deployed-server-environment.yaml", *envs, *extra)


def _workdir(stack: Stack) -> tuple[str, ...]:
    return ("install_workdir", stack.name)


def _ceph_deploy(stack: Stack) -> tuple[str, ...]:
    s = stack.name
    return ("openstack", "overcloud", "ceph", "deploy", f"{B}/{s}/deployed-server-environment.yaml",
            "--stack", s, "--roles-data", f"{B}/{s}/roles_data.yaml",
            "--output", f"{WD}/{s}/deployed-ceph.yaml")


def _export_ceph(stack: Stack) -> tuple[str, ...]:
    s = stack.name
    return ("openstack", "overcloud", "export", "ceph", "--stack", s,
            "--output-file", f"{WD}/{s}/ceph-export.yaml", "--force-overwrite")


def steps(lab: Lab, stacks: list[Stack]) -> list[Step]:
    by_kind: dict[str, list[Stack]] = {k: [] for k in STEP_ORDER}
    for s in stacks:
        by_kind[stack_kind(s)].append(s)
    ceph, control = by_kind[CEPH][:1], by_kind[CONTROL][:1]
    edges = by_kind[EDGE]
    out: list[Step] = []
    central_external: tuple[str, ...] = ()
    central_multi: tuple[str, ...] = ()
    for s in by_kind[CEPH]:
        out.append(Step(
            f"{s.name}: the external Ceph cluster ({', '.join(s.roles())}), deployed first",
            (_workdir(s), _ceph_deploy(s),
             _deploy(s, "-e", f"{WD}/{s.name}/deployed-ceph.yaml"),
             _export_ceph(s))))
    if ceph:
        c = ceph[0].name
        central_external = ("-e", f"{WD}/{c}/external-ceph-params.yaml")
        central_multi = ("-e", f"{WD}/{c}/ceph-external-multi.yaml")
        out[0] = Step(out[0].title, (*out[0].commands,
                      ("ceph_client_env", "default", f"{WD}/{c}/external-ceph-params.yaml",
                       f"{WD}/{c}/ceph-export.yaml", CENTRAL_CLUSTER),
                      ("ceph_client_env", "multi", f"{WD}/{c}/ceph-external-multi.yaml",
                       f"{WD}/{c}/ceph-export.yaml", CENTRAL_CLUSTER)))
    for s in by_kind[CONTROL]:
        out.append(Step(
            f"{s.name}: the control plane, Glance and Cinder on the external Ceph cluster",
            (_workdir(s), _deploy(s, *central_external,
                                  "-e", f"{B}/{s.name}/glance-default-store.yaml"),
             ("openstack", "overcloud", "export", "--stack", s.name,
              "--output-file", f"{WD}/{s.name}/export.yaml", "--force-overwrite"))))
    central_export = (("-e", f"{WD}/{control[0].name}/export.yaml") if control else ())
    for s in by_kind[CENTRAL]:
        out.append(Step(f"{s.name}: central compute, its disks on the external Ceph cluster",
                        (_workdir(s), _deploy(s, *central_external, *central_export))))
    for s in edges:
        extra = (*central_export, "-e", f"{B}/{s.name}/availability-zone.yaml")
        if hci(s):
            out.append(Step(
                f"{s.name}: edge site with its own Ceph cluster and Glance",
                (_workdir(s), _ceph_deploy(s),
                 _deploy(s, *extra, "-e", f"{WD}/{s.name}/deployed-ceph.yaml",
                         *central_multi, "-e", f"{B}/{s.name}/glance-central-store.yaml"),
                 _export_ceph(s))))
        else:
            out.append(Step(f"{s.name}: edge site, compute only",
                            (_workdir(s), _deploy(s, *central_external, *extra))))
    for s in by_kind[OTHER]:
        out.append(Step(f"{s.name}: {', '.join(s.roles())}",
                        (_workdir(s), _deploy(s, *central_export))))
    hci_edges = [s for s in edges if hci(s)]
    if control and hci_edges:
        s = control[0]
        edge_multi = f"{WD}/{s.name}/edge-ceph-external-multi.yaml"
        exports = [a for e in hci_edges for a in (f"{WD}/{e.name}/ceph-export.yaml", e.name)]
        out.append(Step(
            f"{s.name} update: the edge Ceph clusters as Glance stores "
            f"({', '.join(e.name for e in hci_edges)})",
            (("ceph_client_env", "multi", edge_multi, *exports),
             _deploy(s, *central_external, "-e", f"{B}/{s.name}/glance-default-store.yaml",
                     "-e", edge_multi, "-e", f"{B}/{s.name}/glance-edge-stores.yaml"))))
    return out


def glance_stores(stores: list[str], description: str) -> dict[str, object]:
    """GlanceMultistoreConfig: one rbd store per Ceph cluster, named as the cluster."""
    return {"parameter_defaults": {"GlanceMultistoreConfig": {
        name: {"GlanceBackend": "rbd", "GlanceStoreDescription": f"{name} {description}",
               "CephClusterName": name, "CephClientUserName": "openstack"}
        for name in stores}}}


SCRIPT_HEAD = r"""#!/bin/bash
# {origin}
#
# The Glance multistore DCN experiment of lab {lab}, stack by stack, as `openstack overcloud`
# commands for the undercloud (Wallaby). Copy the whole inventory directory to the
# undercloud and run this from there as the stack user, or run it step by step by hand.
# Every deploy uses path B: the stack's deployed-server-environment.yaml, passed with -e
# (see README, "Deploying the five stacks"). It follows the lab's current stack assignment.
set -euo pipefail
BUNDLE=${{BUNDLE:-$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)}}
THT=${{THT:-/usr/share/openstack-tripleo-heat-templates}}
SSH_USER=${{SSH_USER:-{ssh_user}}}
SSH_KEY=${{SSH_KEY:-$HOME/.ssh/id_rsa}}

# The client's working directory of a stack, with the inventory `ceph deploy` reads.
install_workdir() {{
    mkdir -p "$HOME/overcloud-deploy/$1"
    cp -n "$BUNDLE/$1/overcloud-deploy/$1/tripleo-ansible-inventory.yaml" \
        "$HOME/overcloud-deploy/$1/"
}}

# ceph_client_env MODE OUT EXPORT CLUSTER [EXPORT CLUSTER]...: from `overcloud export ceph`
# files, the parameters of environments/external-ceph.yaml (MODE default: the stack's own
# Ceph is that cluster) or one CephExternalMultiConfig with every cluster (MODE multi:
# additional clusters, in one file since a later -e replaces the whole list), each named
# CLUSTER in the clients' /etc/ceph (every cephadm cluster calls itself `ceph`).
ceph_client_env() {{
    python3 - "$@" <<'EOF'
import sys, yaml
mode, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
clusters = []
for export, name in zip(args[::2], args[1::2]):
    c = yaml.safe_load(open(export))["parameter_defaults"]["CephExternalMultiConfig"][0]
    c["cluster"] = name
    keyring = f"/etc/ceph/{{name}}.client.openstack.keyring"
    c["ceph_conf_overrides"] = {{"client": {{"keyring": keyring}}}}
    clusters.append(c)
if mode == "default":
    c = clusters[0]
    key = next(k["key"] for k in c["keys"] if k["name"] == "client.openstack")
    params = {{"CephClusterFSID": c["fsid"], "CephClientKey": key,
              "CephExternalMonHost": c["external_cluster_mon_ips"],
              "CephClusterName": c["cluster"]}}
else:
    params = {{"CephExternalMultiConfig": clusters}}
yaml.safe_dump({{"parameter_defaults": params}}, open(out, "w"), default_flow_style=False)
EOF
}}
"""


def _quote(arg: str) -> str:
    if arg.startswith("$"):  # a variable at the head of a path: expand it, quote the rest
        var, _, rest = arg.partition("/")
        return f'"{var}/{rest}"' if rest else f'"{var}"'
    return shlex.quote(arg)


def script(lab: Lab, stacks: list[Stack], origin: str) -> str:
    text = SCRIPT_HEAD.format(origin=origin, lab=lab.name, ssh_user=lab.ssh_user)
    for n, step in enumerate(steps(lab, stacks), 1):
        text += f"\n# {n}. {step.title}\n"
        for argv in step.commands:
            words = [_quote(a) for a in argv]
            lines, line = [], words[0]
            for w in words[1:]:
                if len(line) + len(w) > 90 or (w.startswith("-") and len(line) > 40):
                    lines.append(line)
                    line = "    " + w
                else:
                    line += " " + w
            lines.append(line)
            text += " \\\n".join(lines) + "\n"
    return text
