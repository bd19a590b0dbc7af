terraform {
  required_version = ">= 1.0"

  required_providers {
    libvirt = {
      source = "dmacvicar/libvirt"
      # 0.9 rewrote the resource schemas after libvirt's XML; this module uses the 0.8 schema.
      version = ">= 0.8.0, < 0.9.0"
    }
  }
}
