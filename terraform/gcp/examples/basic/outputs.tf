output "caa_env" {
  description = "Settings for cloud-api-adaptor's gcp provider (PODVM_IMAGE_NAME, GCP_NETWORK)."
  value       = module.podvm_image.caa_env
}
