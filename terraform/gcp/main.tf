# Publishes the pod VM image as a Compute Engine image that Confidential VMs (SEV, SEV-SNP and TDX) can boot,
# and the firewall rules that let cloud-api-adaptor on the worker nodes reach the pod VMs.
# Compute Engine imports a raw disk only from a disk.raw tarball in Cloud Storage: bucket -> object -> image.

locals {
  target_tags = length(var.podvm_network_tags) > 0 ? var.podvm_network_tags : null
}

resource "google_storage_bucket" "images" {
  name                        = var.bucket_name
  project                     = var.project_id
  location                    = var.bucket_location
  force_destroy               = var.force_destroy_bucket
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
}

resource "google_storage_bucket_object" "image" {
  name         = "${var.image_name}.tar.gz"
  bucket       = google_storage_bucket.images.name
  source       = var.image_path
  content_type = "application/gzip"
}

# A Confidential VM boots only from an image that declares the matching capability: SEV_CAPABLE,
# SEV_SNP_CAPABLE or TDX_CAPABLE for GCP_CONFIDENTIAL_TYPE SEV, SEV_SNP or TDX. They all need UEFI, and the
# third-generation machine types (C3 for TDX, C3D) only have gVNIC network interfaces.
resource "google_compute_image" "podvm" {
  name         = var.image_name
  project      = var.project_id
  family       = var.image_family
  description  = "Confidential Containers peer pod VM image"
  architecture = "X86_64"
  labels       = var.labels

  raw_disk {
    source = "https://storage.googleapis.com/${google_storage_bucket.images.name}/${google_storage_bucket_object.image.name}"
  }

  guest_os_features {
    type = "UEFI_COMPATIBLE"
  }

  guest_os_features {
    type = "GVNIC"
  }

  guest_os_features {
    type = "SEV_CAPABLE"
  }

  guest_os_features {
    type = "SEV_SNP_CAPABLE"
  }

  guest_os_features {
    type = "TDX_CAPABLE"
  }
}

# Pod VMs accept connections from the worker nodes only: the forwarder (mTLS, from cloud-api-adaptor) and the
# pod network's VXLAN tunnel. The network's implied deny-ingress rule drops everything else.
resource "google_compute_firewall" "forwarder" {
  name        = "${var.name_prefix}-podvm-forwarder"
  project     = var.project_id
  network     = var.network
  description = "agent-protocol-forwarder from cloud-api-adaptor on the worker nodes"
  direction   = "INGRESS"
  source_tags = [var.worker_network_tag]
  target_tags = local.target_tags

  allow {
    protocol = "tcp"
    ports    = [tostring(var.forwarder_port)]
  }
}

resource "google_compute_firewall" "vxlan" {
  count = var.vxlan_port != null ? 1 : 0

  name        = "${var.name_prefix}-podvm-vxlan"
  project     = var.project_id
  network     = var.network
  description = "Pod network VXLAN tunnel from the worker nodes"
  direction   = "INGRESS"
  source_tags = [var.worker_network_tag]
  target_tags = local.target_tags

  allow {
    protocol = "udp"
    ports    = [tostring(var.vxlan_port)]
  }
}
