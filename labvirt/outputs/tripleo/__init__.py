"""What a user takes to the undercloud to deploy each stack with TripleO (Wallaby).

Per stack, a bundle under the inventory directory (`<stack>/`):

    baremetal-deployment.yaml        path A: --deployed-server --baremetal-deployment FILE
    deployed-server-environment.yaml path B: --deployed-server -e FILE (what path A's
                                     provisioning would write, plus the control-plane VIP)
    roles_data.yaml                  -r, the stack's roles from tripleo-heat-templates
    availability-zone.yaml           -e, edge (DCN) stacks only: Nova/Cinder/Glance zone
    glance-*.yaml                    -e, the Glance stores of the multistore experiment
    overcloud-deploy/<stack>/tripleo-ansible-inventory.yaml
                                     the client's working directory, in TripleO's shape

and for the lab: `inventory.yaml` (TripleO's merged shape over all stacks) and
`deploy-order.sh` (the experiment's commands, in order). Shapes are those TripleO's own
code writes and reads; the consumer tests run that code on these files.
"""

from __future__ import annotations

from typing import Any

import yaml

from labvirt.model import Lab, Stack
from labvirt.outputs.tripleo import order
from labvirt.outputs.tripleo import roles as tht_roles
from labvirt.outputs.tripleo.deployment import (
    availability_zone_environment,
    baremetal_deployment,
    deployed_server_environment,
)
from labvirt.outputs.tripleo.inventory import inventory

__all__ = ["baremetal_deployment", "check_stacks", "deployed_server_environment", "inventory",
           "lab_files", "stack_bundle"]

INVENTORY = "tripleo-ansible-inventory.yaml"
DEPLOY_ORDER = "deploy-order.sh"
# Every file name a stack directory may hold (stale-stack clean-up removes only these)
STACK_FILES = ("baremetal-deployment.yaml", "deployed-server-environment.yaml",
               "roles_data.yaml", "availability-zone.yaml", "glance-default-store.yaml",
               "glance-edge-stores.yaml", "glance-central-store.yaml", "external-ceph.yaml",
               INVENTORY)

PATH_A = ("Path A: openstack overcloud deploy --stack {s} --deployed-server "
          "--baremetal-deployment {s}/baremetal-deployment.yaml -r {s}/roles_data.yaml ...\n"
          "The client adopts the managed: false nodes, makes their ports and the VIPs in the "
          "undercloud's Neutron\nand writes the environment itself: do NOT also pass "
          "{s}/deployed-server-environment.yaml.")
PATH_B = ("Path B: openstack overcloud deploy --stack {s} --deployed-server "
          "-e {s}/deployed-server-environment.yaml -r {s}/roles_data.yaml ...\n"
          "What `openstack overcloud node provision` would write for these nodes, plus the "
          "control-plane VIP\n(ControlPlaneVipData) the ephemeral Heat needs. Not together "
          "with --baremetal-deployment (path A):\nthe client refuses its resource_registry "
          "then. Also the DEPLOYED.yaml of `openstack overcloud ceph deploy`.")


def _yaml(data: Any, *header: str) -> str:
    lines = "".join(f"# {h}\n" if h else "#\n" for text in header for h in text.split("\n"))
    return lines + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)


def check_stacks(stacks: list[Stack]) -> None:
    """Refuse, before anything is written, a stack whose role THT does not define."""
    for s in stacks:
        tht_roles.check_roles(s.name, s.roles())


def stack_bundle(lab: Lab, stack: Stack, stacks: list[Stack],
                 origin: str) -> list[tuple[str, str, str]]:
    """(path relative to the stack's directory, text, what it is) of one stack's bundle.
    `stacks` are all the stacks being deployed: the Glance stores depend on them."""
    s = stack.name
    source = tht_roles.provenance()
    files = [
        ("baremetal-deployment.yaml",
         _yaml(baremetal_deployment(lab, stack), origin, PATH_A.format(s=s)),
         "path A: --baremetal-deployment (managed: false)"),
        ("deployed-server-environment.yaml",
         _yaml(deployed_server_environment(lab, stack), origin, PATH_B.format(s=s)),
         "path B: -e deployed-server environment with the control-plane VIP"),
        ("roles_data.yaml",
         f"# {origin}\n# -r for both paths: roles {', '.join(stack.roles())} from "
         f"{source['distribution']} {source['version']} ({source['file']}, sha256 "
         f"{source['sha256']}),\n# as `openstack overcloud roles generate` writes them.\n"
         + tht_roles.roles_file(stack.roles()),
         "roles file (-r) from tripleo-heat-templates' roles"),
    ]
    for env in order.stack_environments(stack):
        if env in order.BUNDLED:
            files.append((order.BUNDLED[env], _yaml(
                tht_roles.environment(env), origin,
                f"-e for {s}: THT's {env} ({source['version']}) with its templates as "
                "absolute paths\n(its own relative path to ceph-external.yaml is one ../ "
                "too many in this release)"), f"THT {env}, paths resolved (-e)"))
    if order.stack_kind(stack) == order.EDGE:
        files.append(("availability-zone.yaml",
                      _yaml(availability_zone_environment(stack), origin,
                            f"-e for edge stack {s} (both paths): its own availability zone"),
                      "edge availability zone (-e)"))
    kind = order.stack_kind(stack)
    edges = [e.name for e in stacks if order.stack_kind(e) == order.EDGE and order.hci(e)]
    if kind == order.CONTROL:
        files.append(("glance-default-store.yaml", _yaml(
            {"parameter_defaults": {"GlanceBackendID": order.CENTRAL_CLUSTER,
                                    "GlanceStoreDescription": "central rbd glance store"}},
            origin, f"-e for {s}: Glance's default store is the central Ceph cluster"),
            "Glance default store (-e)"))
        if edges:
            files.append(("glance-edge-stores.yaml", _yaml(
                order.glance_stores(edges, "rbd glance store"), origin,
                f"-e for the {s} update after the edge sites: their Ceph clusters as "
                "Glance stores"), "Glance edge stores (-e, control-plane update)"))
    if kind == order.EDGE and order.hci(stack):
        files.append(("glance-central-store.yaml", _yaml(
            order.glance_stores([order.CENTRAL_CLUSTER], "rbd glance store"), origin,
            f"-e for edge stack {s}: the central Ceph cluster as an additional Glance store"),
            "Glance central store (-e)"))
    files.append((f"overcloud-deploy/{s}/{INVENTORY}",
                  _yaml(inventory(lab, [stack]), origin,
                        f"~/overcloud-deploy/{s}/ on the undercloud: what "
                        "`openstack overcloud ceph deploy --stack "
                        f"{s}` reads"),
                  "Ansible inventory in TripleO's shape (client working directory)"))
    return files


def lab_files(lab: Lab, stacks: list[Stack], origin: str) -> list[tuple[str, str, str]]:
    """(path relative to the output directory, text, what) of the lab-wide TripleO files."""
    return [
        ("inventory.yaml",
         _yaml(inventory(lab, stacks), origin,
               "All stacks, merged as tripleo-common's TripleoInventories merges them"),
         "merged inventory over all stacks (TripleO's shape)"),
        (DEPLOY_ORDER, order.script(lab, stacks, origin),
         "the experiment's commands, in order (path B)"),
    ]
