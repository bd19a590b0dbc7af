# Publishes a pod VM build as a Confidential VM capable image and opens the pod VMs to the worker nodes.

terraform {
  required_version = ">= 1.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "podvm_image" {
  source = "../.."

  project_id         = var.project_id
  image_path         = var.image_path
  image_name         = "podvm-${var.build_id}"
  bucket_name        = var.bucket_name
  bucket_location    = upper(var.region)
  network            = var.network
  worker_network_tag = var.worker_network_tag
  labels             = { project = "peerpods" }
}
