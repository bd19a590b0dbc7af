variable "region" {
  description = "AWS region to publish the AMI in (cloud-api-adaptor's AWS_REGION)."
  type        = string
  default     = "us-east-2"
}

variable "image_path" {
  description = "Raw pod VM image from the podvm build."
  type        = string
}

variable "image_sha256" {
  description = "SHA-256 of the image from the build manifest; null hashes the file."
  type        = string
  default     = null
}

variable "build_id" {
  description = "Distinguishes this build's AMI name, for example the version and a short hash."
  type        = string
  default     = "0-1-0"
}

variable "bucket_name" {
  description = "S3 bucket to create for the upload."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the worker nodes."
  type        = string
}

variable "worker_security_group_id" {
  description = "Security group of the worker nodes."
  type        = string
}
