#!/bin/bash
# written by labvirt for lab glance-dcn; regenerate with `labvirt inventory`
#
# The Glance multistore DCN experiment of lab glance-dcn, stack by stack, as `openstack overcloud`
# commands for the undercloud (Wallaby). Copy the whole inventory directory to the
# undercloud and run this from there as the stack user, or run it step by step by hand.
# Every deploy uses path B: the stack's deployed-server-environment.yaml, passed with -e
# (see README, "Deploying the five stacks"). It follows the lab's current stack assignment.
set -euo pipefail
BUNDLE=${BUNDLE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
THT=${THT:-/usr/share/openstack-tripleo-heat-templates}
SSH_USER=${SSH_USER:-tripleo-admin}
SSH_KEY=${SSH_KEY:-$HOME/.ssh/id_rsa}

# The client's working directory of a stack, with the inventory `ceph deploy` reads.
install_workdir() {
    mkdir -p "$HOME/overcloud-deploy/$1"
    cp -n "$BUNDLE/$1/overcloud-deploy/$1/tripleo-ansible-inventory.yaml" \
        "$HOME/overcloud-deploy/$1/"
}

# ceph_client_env MODE OUT EXPORT CLUSTER [EXPORT CLUSTER]...: from `overcloud export ceph`
# files, the parameters of environments/external-ceph.yaml (MODE default: the stack's own
# Ceph is that cluster) or one CephExternalMultiConfig with every cluster (MODE multi:
# additional clusters, in one file since a later -e replaces the whole list), each named
# CLUSTER in the clients' /etc/ceph (every cephadm cluster calls itself `ceph`).
ceph_client_env() {
    python3 - "$@" <<'EOF'
import sys, yaml
mode, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
clusters = []
for export, name in zip(args[::2], args[1::2]):
    c = yaml.safe_load(open(export))["parameter_defaults"]["CephExternalMultiConfig"][0]
    c["cluster"] = name
    keyring = f"/etc/ceph/{name}.client.openstack.keyring"
    c["ceph_conf_overrides"] = {"client": {"keyring": keyring}}
    clusters.append(c)
if mode == "default":
    c = clusters[0]
    key = next(k["key"] for k in c["keys"] if k["name"] == "client.openstack")
    params = {"CephClusterFSID": c["fsid"], "CephClientKey": key,
              "CephExternalMonHost": c["external_cluster_mon_ips"],
              "CephClusterName": c["cluster"]}
else:
    params = {"CephExternalMultiConfig": clusters}
yaml.safe_dump({"parameter_defaults": params}, open(out, "w"), default_flow_style=False)
EOF
}

# 1. central-ceph: the external Ceph cluster (CephAll), deployed first
install_workdir central-ceph
openstack overcloud ceph deploy "$BUNDLE/central-ceph/deployed-server-environment.yaml" \
    --stack central-ceph --roles-data "$BUNDLE/central-ceph/roles_data.yaml" \
    --output "$HOME/overcloud-deploy/central-ceph/deployed-ceph.yaml"
openstack overcloud deploy --templates --stack central-ceph \
    --deployed-server --overcloud-ssh-user "$SSH_USER" \
    --overcloud-ssh-key "$SSH_KEY" -r "$BUNDLE/central-ceph/roles_data.yaml" \
    -n "$THT/network-data-samples/no-networks.yaml" \
    -e "$BUNDLE/central-ceph/deployed-server-environment.yaml" \
    -e "$THT/environments/cephadm/cephadm-rbd-only.yaml" \
    -e "$HOME/overcloud-deploy/central-ceph/deployed-ceph.yaml"
openstack overcloud export ceph --stack central-ceph \
    --output-file "$HOME/overcloud-deploy/central-ceph/ceph-export.yaml" \
    --force-overwrite
ceph_client_env default "$HOME/overcloud-deploy/central-ceph/external-ceph-params.yaml" \
    "$HOME/overcloud-deploy/central-ceph/ceph-export.yaml" central
ceph_client_env multi "$HOME/overcloud-deploy/central-ceph/ceph-external-multi.yaml" \
    "$HOME/overcloud-deploy/central-ceph/ceph-export.yaml" central

# 2. control-plane: the control plane, Glance and Cinder on the external Ceph cluster
install_workdir control-plane
openstack overcloud deploy --templates --stack control-plane \
    --deployed-server --overcloud-ssh-user "$SSH_USER" \
    --overcloud-ssh-key "$SSH_KEY" -r "$BUNDLE/control-plane/roles_data.yaml" \
    -n "$THT/network-data-samples/no-networks.yaml" \
    -e "$BUNDLE/control-plane/deployed-server-environment.yaml" \
    -e "$BUNDLE/control-plane/external-ceph.yaml" \
    -e "$HOME/overcloud-deploy/central-ceph/external-ceph-params.yaml" \
    -e "$BUNDLE/control-plane/glance-default-store.yaml"
openstack overcloud export --stack control-plane \
    --output-file "$HOME/overcloud-deploy/control-plane/export.yaml" \
    --force-overwrite

# 3. central-compute: central compute, its disks on the external Ceph cluster
install_workdir central-compute
openstack overcloud deploy --templates --stack central-compute \
    --deployed-server --overcloud-ssh-user "$SSH_USER" \
    --overcloud-ssh-key "$SSH_KEY" -r "$BUNDLE/central-compute/roles_data.yaml" \
    -n "$THT/network-data-samples/no-networks.yaml" \
    -e "$BUNDLE/central-compute/deployed-server-environment.yaml" \
    -e "$BUNDLE/central-compute/external-ceph.yaml" \
    -e "$HOME/overcloud-deploy/central-ceph/external-ceph-params.yaml" \
    -e "$HOME/overcloud-deploy/control-plane/export.yaml"

# 4. dcn0: edge site with its own Ceph cluster and Glance
install_workdir dcn0
openstack overcloud ceph deploy "$BUNDLE/dcn0/deployed-server-environment.yaml" \
    --stack dcn0 --roles-data "$BUNDLE/dcn0/roles_data.yaml" \
    --output "$HOME/overcloud-deploy/dcn0/deployed-ceph.yaml"
openstack overcloud deploy --templates --stack dcn0 \
    --deployed-server --overcloud-ssh-user "$SSH_USER" \
    --overcloud-ssh-key "$SSH_KEY" -r "$BUNDLE/dcn0/roles_data.yaml" \
    -n "$THT/network-data-samples/no-networks.yaml" \
    -e "$BUNDLE/dcn0/deployed-server-environment.yaml" \
    -e "$THT/environments/cephadm/cephadm-rbd-only.yaml" \
    -e "$THT/environments/dcn-storage.yaml" \
    -e "$HOME/overcloud-deploy/control-plane/export.yaml" \
    -e "$BUNDLE/dcn0/availability-zone.yaml" \
    -e "$HOME/overcloud-deploy/dcn0/deployed-ceph.yaml" \
    -e "$HOME/overcloud-deploy/central-ceph/ceph-external-multi.yaml" \
    -e "$BUNDLE/dcn0/glance-central-store.yaml"
openstack overcloud export ceph --stack dcn0 \
    --output-file "$HOME/overcloud-deploy/dcn0/ceph-export.yaml" \
    --force-overwrite

# 5. dcn1: edge site with its own Ceph cluster and Glance
install_workdir dcn1
openstack overcloud ceph deploy "$BUNDLE/dcn1/deployed-server-environment.yaml" \
    --stack dcn1 --roles-data "$BUNDLE/dcn1/roles_data.yaml" \
    --output "$HOME/overcloud-deploy/dcn1/deployed-ceph.yaml"
openstack overcloud deploy --templates --stack dcn1 \
    --deployed-server --overcloud-ssh-user "$SSH_USER" \
    --overcloud-ssh-key "$SSH_KEY" -r "$BUNDLE/dcn1/roles_data.yaml" \
    -n "$THT/network-data-samples/no-networks.yaml" \
    -e "$BUNDLE/dcn1/deployed-server-environment.yaml" \
    -e "$THT/environments/cephadm/cephadm-rbd-only.yaml" \
    -e "$THT/environments/dcn-storage.yaml" \
    -e "$HOME/overcloud-deploy/control-plane/export.yaml" \
    -e "$BUNDLE/dcn1/availability-zone.yaml" \
    -e "$HOME/overcloud-deploy/dcn1/deployed-ceph.yaml" \
    -e "$HOME/overcloud-deploy/central-ceph/ceph-external-multi.yaml" \
    -e "$BUNDLE/dcn1/glance-central-store.yaml"
openstack overcloud export ceph --stack dcn1 \
    --output-file "$HOME/overcloud-deploy/dcn1/ceph-export.yaml" \
    --force-overwrite

# 6. control-plane update: the edge Ceph clusters as Glance stores (dcn0, dcn1)
ceph_client_env multi "$HOME/overcloud-deploy/control-plane/edge-ceph-external-multi.yaml" \
    "$HOME/overcloud-deploy/dcn0/ceph-export.yaml" dcn0 \
    "$HOME/overcloud-deploy/dcn1/ceph-export.yaml" dcn1
openstack overcloud deploy --templates --stack control-plane \
    --deployed-server --overcloud-ssh-user "$SSH_USER" \
    --overcloud-ssh-key "$SSH_KEY" -r "$BUNDLE/control-plane/roles_data.yaml" \
    -n "$THT/network-data-samples/no-networks.yaml" \
    -e "$BUNDLE/control-plane/deployed-server-environment.yaml" \
    -e "$BUNDLE/control-plane/external-ceph.yaml" \
    -e "$HOME/overcloud-deploy/central-ceph/external-ceph-params.yaml" \
    -e "$BUNDLE/control-plane/glance-default-store.yaml" \
    -e "$HOME/overcloud-deploy/control-plane/edge-ceph-external-multi.yaml" \
    -e "$BUNDLE/control-plane/glance-edge-stores.yaml"
