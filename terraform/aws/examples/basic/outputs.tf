output "caa_env" {
  description = "Settings for cloud-api-adaptor's aws provider (PODVM_AMI_ID, AWS_SUBNET_ID, AWS_SG_IDS)."
  value       = module.podvm_image.caa_env
}
