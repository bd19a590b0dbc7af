variable "image_path" {
  description = "Local path (on the machine running terraform) of the pod VM disk image in qcow2 format (the podvm build's .qcow2 output); the provider uploads it to the libvirt host."
  type        = string

  validation {
    condition     = can(regex("\\.qcow2$", var.image_path))
    error_message = "The image_path must name a .qcow2 file: the volume is created with format qcow2."
  }
}

variable "volume_name" {
  description = "Name of the base volume (cloud-api-adaptor's LIBVIRT_VOL_NAME); pod VM root disks are qcow2 overlays backed by it."
  type        = string
  default     = "podvm-base.qcow2"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,250}$", var.volume_name))
    error_message = "The volume_name must be a plain file name: letters, digits, dots, underscores or hyphens, no slashes."
  }
}

variable "pool_name" {
  description = "Storage pool of the volume (cloud-api-adaptor's LIBVIRT_POOL). An existing pool, unless pool_path is set."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", var.pool_name))
    error_message = "The pool_name must be letters, digits, dots, underscores or hyphens, no slashes."
  }
}

variable "pool_path" {
  description = "Directory for a new directory-backed pool named pool_name; null uses the existing pool."
  type        = string
  default     = null

  validation {
    condition     = var.pool_path == null ? true : can(regex("^/", var.pool_path))
    error_message = "The pool_path must be an absolute path."
  }
}
