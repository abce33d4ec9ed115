"""The lab: inventory, Ansible provisioning, and (later) virtual hosts."""
