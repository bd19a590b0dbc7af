# Publishes a pod VM build as an AMI in the workers' VPC, with a pod VM subnet and security group.

terraform {
  required_version = ">= 1.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}

module "podvm_image" {
  source = "../.."

  image_path               = var.image_path
  image_sha256             = var.image_sha256
  image_name               = "podvm-${var.build_id}"
  bucket_name              = var.bucket_name
  vpc_id                   = var.vpc_id
  subnet_cidr              = "10.0.64.0/24"
  worker_security_group_id = var.worker_security_group_id
  tags                     = { Project = "peerpods" }
}
