#!/bin/sh
# written by labvirt for lab glance-dcn; regenerate with `labvirt inventory`
set -e
oc create secret generic dataplane-ansible-ssh-private-key-secret --save-config --dry-run=client \
  --from-file=ssh-privatekey=/nonexistent/labvirt-state/glance-dcn/id_ed25519 \
  --from-file=ssh-publickey=/nonexistent/labvirt-state/glance-dcn/id_ed25519.pub \
  -n openstack -o yaml | oc apply -f -
