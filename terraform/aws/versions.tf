terraform {
  required_version = ">= 1.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # aws_vpc_security_group_ingress_rule and aws_ami.tpm_support / imds_support need 5.x.
      version = ">= 5.0, < 7.0"
    }
  }
}
