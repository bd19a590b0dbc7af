output "volume_name" {
  description = "Name of the base volume: cloud-api-adaptor's LIBVIRT_VOL_NAME."
  value       = libvirt_volume.podvm.name
}

output "volume_id" {
  description = "libvirt key (path) of the base volume."
  value       = libvirt_volume.podvm.id
}

output "pool_name" {
  description = "Storage pool holding the volume: cloud-api-adaptor's LIBVIRT_POOL."
  value       = local.pool_name
}

output "caa_env" {
  description = "cloud-api-adaptor settings for the libvirt provider, by environment variable name, for what this module published."
  value = {
    LIBVIRT_VOL_NAME = libvirt_volume.podvm.name
    LIBVIRT_POOL     = local.pool_name
  }
}
