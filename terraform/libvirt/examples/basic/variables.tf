variable "libvirt_uri" {
  description = "libvirt connection URI (cloud-api-adaptor's LIBVIRT_URI names the same host)."
  type        = string
  default     = "qemu:///system"
}

variable "image_path" {
  description = "qcow2 pod VM image from the podvm build."
  type        = string
}
