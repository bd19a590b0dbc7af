# Publishes a pod VM build to a new Azure Compute Gallery and creates the pod VM network security group.

terraform {
  required_version = ">= 1.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.9, < 5.0"
    }
  }
}

provider "azurerm" {
  features {}
  subscription_id = var.subscription_id
}

module "podvm_image" {
  source = "../.."

  resource_group_name    = var.resource_group_name
  location               = var.location
  image_path             = var.image_path
  image_version          = var.image_version
  storage_account_name   = var.storage_account_name
  security_type          = "ConfidentialVmSupported"
  worker_subnet_prefixes = var.worker_subnet_prefixes
  tags                   = { project = "peerpods" }
}
