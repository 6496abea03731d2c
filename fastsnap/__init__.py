"""fastsnap: fast snapshots of Ceph RBD instance disks into (multistore) Glance."""
