output "ami_id" {
  description = "Id of the pod VM AMI: cloud-api-adaptor's PODVM_AMI_ID."
  value       = aws_ami.podvm.id
}

output "snapshot_id" {
  description = "Id of the EBS snapshot the AMI boots from."
  value       = aws_ebs_snapshot_import.podvm.id
}

output "image_bucket" {
  description = "Name of the S3 bucket holding the raw image."
  value       = aws_s3_bucket.images.id
}

output "image_object_key" {
  description = "S3 key of the uploaded raw image."
  value       = aws_s3_object.image.key
}

output "vpc_id" {
  description = "VPC of the pod VMs: the created one, or var.vpc_id."
  value       = local.vpc_id
}

output "subnet_id" {
  description = "Id of the created pod VM subnet (AWS_SUBNET_ID), or null when subnet_cidr is null."
  value       = var.subnet_cidr != null ? aws_subnet.podvm[0].id : null
}

output "security_group_id" {
  description = "Id of the pod VM security group (AWS_SG_IDS), or null when worker_security_group_id is null."
  value       = local.create_sg ? aws_security_group.podvm[0].id : null
}

output "caa_env" {
  description = "cloud-api-adaptor settings for the aws provider, by environment variable name, for what this module created."
  value = merge(
    { PODVM_AMI_ID = aws_ami.podvm.id },
    var.subnet_cidr != null ? { AWS_SUBNET_ID = aws_subnet.podvm[0].id } : {},
    local.create_sg ? { AWS_SG_IDS = aws_security_group.podvm[0].id } : {},
  )
}
