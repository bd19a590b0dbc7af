"""libvirt provider: pod VMs as libvirt domains (see `provider`). The entry point is
`providers.libvirt.provider:PLUGIN`; `domain_xml` and `cidata` are pure and need no libvirt."""
