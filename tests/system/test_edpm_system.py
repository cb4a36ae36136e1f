"""The tiny lab's EDPM nodes, reached the way RHOSO 18's data plane reaches them.

The operator turns each OpenStackDataPlaneNodeSet into an Ansible inventory
(openstack-operator internal/dataplane/inventory.go, GenerateNodeSetInventory): one group per
NodeSet with `ansible_user`, `ansible_port`, `edpm_nodeset_name`, `edpm_services`, ... as
group vars; one host per node (its hostName up to the first dot) with `ansible_host` (the
node's ansibleHost) and, from the IPAM reservation, `ctlplane_ip`, `ctlplane_cidr`,
`ctlplane_gateway_ip`, `canonical_hostname`, ... Here that inventory is derived from the
`edpm/` bundle `labvirt inventory` wrote, with one adaptation: the operator's Ansible runs
on the ctlplane network and connects to ansibleHost:22; the hypervisor never sends traffic to
192.168.x, so `ansible_host`/`ansible_port` become the node's 127.0.0.1 port forward (from
labvirt's hypervisor inventory, with its known_hosts and strict host key checking), and the
private key file is the one the bundle's `oc create secret` command reads. Faked: nothing but
the IPAM reservation, taken as the NodeSet's fixedIP (what IPAM reserves for it).

Login, user and passwordless sudo are proved with `-m raw` first (EDPM's own bootstrap starts
with it), then `ansible -m ping` must return pong from every node: a real Ansible module
shipped as AnsiballZ and run by the node's Python (the tiny image carries Debian's python3.11),
with interpreter discovery left to Ansible, as the operator leaves it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"


def operator_inventory(bundle: Path, access: dict[str, Any], key: Path) -> dict[str, Any]:
    (netconfig,) = [d for d in yaml.safe_load_all((bundle / "netconfig.yaml").read_text()) if d]
    nodesets = [d for d in yaml.safe_load_all((bundle / "nodesets.yaml").read_text()) if d]
    (net,) = netconfig["spec"]["networks"]
    subnets = {s["name"]: s for s in net["subnets"]}
    inv: dict[str, Any] = {}
    for ns in nodesets:
        name, spec = ns["metadata"]["name"], ns["spec"]
        template = spec["nodeTemplate"]
        group_vars: dict[str, Any] = dict(template["ansible"].get("ansibleVars", {}))
        group_vars.update({
            "ansible_user": template["ansible"]["ansibleUser"],
            "edpm_nodeset_name": name,
            "edpm_tls_certs_enabled": spec.get("tlsEnabled", True),
            "edpm_services": spec["services"],
            # operator: /runner/env/ssh_key/ssh_key_<nodeset>, mounted from the Secret
            "ansible_ssh_private_key_file": str(key),
        })
        if template["ansible"].get("ansiblePort"):
            group_vars["ansible_port"] = str(template["ansible"]["ansiblePort"])
        hosts: dict[str, Any] = {}
        for node in spec["nodes"].values():
            host = node["hostName"].split(".")[0]
            (cp,) = [n for n in node["networks"] if n["name"] == "ctlplane"]
            subnet = subnets[cp["subnetName"]]
            hv = {
                "ansible_host": node["ansible"]["ansibleHost"],
                "ansible_port": str(node["ansible"]["ansiblePort"]),
                "ctlplane_ip": cp["fixedIP"],
                "ctlplane_cidr": ipaddress.ip_network(subnet["cidr"]).prefixlen,
                "ctlplane_mtu": net.get("mtu", 1500),
                "ctlplane_gateway_ip": subnet.get("gateway", ""),
                "ctlplane_host_routes": subnet.get("routes", []),
                "ctlplane_dns_nameservers": [],
                "canonical_hostname": f"{node['hostName']}.{net['dnsDomain']}",
                "dns_search_domains": [net["dnsDomain"]],
            }
            # labvirt's access path: the node's loopback forward, strict host keys
            ours = access[host]
            hv["ansible_host"] = ours["ansible_host"]
            hv["ansible_port"] = str(ours["ansible_port"])
            hv["ansible_ssh_common_args"] = ours["ansible_ssh_common_args"]
            hosts[host] = hv
        inv[name] = {"hosts": hosts, "vars": group_vars}
    return inv


def ansible(inventory: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_HOME": str(home),
                "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_CONFIG": str(home / "none"),
                "ANSIBLE_FORKS": "10", "ANSIBLE_NOCOLOR": "1"})
    return subprocess.run([str(ANSIBLE), "-i", str(inventory), "all", *args],
                          capture_output=True, text=True, env=env, timeout=600,
                          stdin=subprocess.DEVNULL)


def test_ansible_reaches_every_edpm_node_as_cloud_admin(ready_lab, tmp_path):
    bundle = ready_lab.out_dir / "edpm"
    hv = yaml.safe_load((ready_lab.out_dir / "hypervisor-inventory.yaml").read_text())
    show = json.loads(ready_lab.run("show", "--format", "json").stdout)
    key = Path(re.search(r"ssh-privatekey=(\S+)",
                         (bundle / "ssh-key-secret.sh").read_text()).group(1))
    assert key.is_file(), "the secret command must name the lab's real key"
    inv = operator_inventory(bundle, hv["all"]["hosts"], key)
    edpm_nodes = sorted(h for g in inv.values() for h in g["hosts"])
    # the demo's compute and HCI stacks, by the lab's own account
    assert edpm_nodes == sorted(n["hostname"] for n in show["nodes"]
                                if n["stack"] in ("central-compute", "dcn0", "dcn1"))
    assert set(inv) == {"central-compute", "dcn0", "dcn1"}
    for g in inv.values():
        assert g["vars"]["ansible_user"] == "cloud-admin"
    ips = {n["hostname"]: n["ctlplane_ip"] for n in show["nodes"]}
    for g in inv.values():
        for host, hvars in g["hosts"].items():
            assert hvars["ctlplane_ip"] == ips[host]
            assert hvars["ansible_host"] == "127.0.0.1"  # never the 192.168.x address
    path = tmp_path / "edpm-inventory.yaml"
    path.write_text(yaml.safe_dump(inv, sort_keys=False))

    raw = ansible(path, tmp_path, "-m", "raw", "-a", "id -un; sudo -n id -u; hostname")
    assert raw.returncode == 0, raw.stdout + raw.stderr
    for host in edpm_nodes:  # (a tty may add a blank line before the output)
        assert re.search(rf"^{re.escape(host)} \| CHANGED \| rc=0 >>\n\s*cloud-admin\n0\n"
                         rf"{re.escape(host)}\n", raw.stdout, re.M), raw.stdout

    become = ansible(path, tmp_path, "-m", "raw", "-a", "id -u", "--become")
    assert become.returncode == 0, become.stdout + become.stderr
    for host in edpm_nodes:
        assert re.search(rf"^{re.escape(host)} \| CHANGED \| rc=0 >>\n\s*0\n", become.stdout,
                         re.M), become.stdout

    ping = ansible(path, tmp_path, "-m", "ping")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    for host in edpm_nodes:
        assert re.search(rf"^{re.escape(host)} \| SUCCESS =>", ping.stdout, re.M), ping.stdout
    assert ping.stdout.count('"ping": "pong"') == len(edpm_nodes), ping.stdout
    # and as root through sudo, the way every EDPM role runs its tasks
    become = ansible(path, tmp_path, "-m", "ping", "--become")
    assert become.returncode == 0, become.stdout + become.stderr
    assert become.stdout.count('"ping": "pong"') == len(edpm_nodes), become.stdout
