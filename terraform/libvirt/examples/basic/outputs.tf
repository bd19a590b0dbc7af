output "caa_env" {
  description = "Settings for cloud-api-adaptor's libvirt provider (LIBVIRT_VOL_NAME, LIBVIRT_POOL)."
  value       = module.podvm_image.caa_env
}
