# Publishes the pod VM image as the base volume that cloud-api-adaptor's libvirt provider clones: each pod VM
# gets a qcow2 overlay backed by this volume, so it is uploaded once per image, into the pool CAA uses.

locals {
  pool_name = var.pool_path != null ? libvirt_pool.podvm[0].name : var.pool_name
}

resource "libvirt_pool" "podvm" {
  count = var.pool_path != null ? 1 : 0

  name = var.pool_name
  type = "dir"

  target {
    path = var.pool_path
  }
}

resource "libvirt_volume" "podvm" {
  name   = var.volume_name
  pool   = local.pool_name
  source = var.image_path
  format = "qcow2"
}
