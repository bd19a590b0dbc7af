output "caa_env" {
  description = "Settings for cloud-api-adaptor's azure provider (AZURE_IMAGE_ID, AZURE_NSG_ID)."
  value       = module.podvm_image.caa_env
}
