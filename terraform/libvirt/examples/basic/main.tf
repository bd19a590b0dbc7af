# Uploads a pod VM build as the base volume cloud-api-adaptor's libvirt provider clones for each pod VM.

terraform {
  required_version = ">= 1.0"

  required_providers {
    libvirt = {
      source  = "dmacvicar/libvirt"
      version = ">= 0.8.0, < 0.9.0"
    }
  }
}

provider "libvirt" {
  uri = var.libvirt_uri
}

module "podvm_image" {
  source = "../.."

  image_path  = var.image_path
  volume_name = "podvm-base.qcow2"
  pool_name   = "default"
}
