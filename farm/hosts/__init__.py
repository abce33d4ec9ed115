"""Real lab hosts through Ansible: the inventory, provisioning, facts
collection and crash collection (`farm lab provision|facts|...`)."""
