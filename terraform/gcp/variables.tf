variable "project_id" {
  description = "Project for the bucket, image and firewall rules (cloud-api-adaptor's GCP_PROJECT_ID); null uses the provider's project."
  type        = string
  default     = null

  validation {
    condition     = var.project_id == null ? true : can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "The project_id must be 6 to 30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "image_path" {
  description = "Local path of the pod VM image as Compute Engine imports it: a gzip tarball holding one file named disk.raw (tar --format=oldgnu -Sczf podvm.tar.gz disk.raw)."
  type        = string

  validation {
    condition     = can(regex("\\.tar\\.gz$", var.image_path))
    error_message = "The image_path must name a .tar.gz file holding disk.raw: Compute Engine imports raw disks only in that form."
  }
}

variable "image_name" {
  description = "Name of the Compute Engine image, also the object name; images are immutable, so use one per build (for example podvm-0-1-0-1a2b3c4)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.image_name))
    error_message = "The image_name must be 1 to 63 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "image_family" {
  description = "Image family the image joins, so the newest build can be found by family; null joins none."
  type        = string
  default     = "peerpods-podvm"

  validation {
    condition     = var.image_family == null ? true : can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.image_family))
    error_message = "The image_family must be null or 1 to 63 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the Cloud Storage bucket this module creates to stage the image tarball (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "The bucket_name must be 3 to 63 lowercase letters, digits, underscores, dots or hyphens, starting and ending with a letter or digit."
  }
}

variable "bucket_location" {
  description = "Location of the bucket (a region such as us-central1, or a multi-region such as US)."
  type        = string
  default     = "US"
}

variable "force_destroy_bucket" {
  description = "Allow terraform destroy to delete the bucket while it still holds objects."
  type        = bool
  default     = false
}

variable "network" {
  description = "Name of the existing VPC network of the worker nodes and pod VMs (cloud-api-adaptor's GCP_NETWORK)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.network))
    error_message = "The network must be a network name: 1 to 63 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "name_prefix" {
  description = "Prefix for the firewall rule names."
  type        = string
  default     = "peerpods"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{0,39}$", var.name_prefix))
    error_message = "The name_prefix must start with a lowercase letter and hold at most 40 lowercase letters, digits or hyphens."
  }
}

variable "worker_network_tag" {
  description = "Network tag on the worker node instances where cloud-api-adaptor runs: the only source the firewall rules admit."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.worker_network_tag))
    error_message = "The worker_network_tag must be 1 to 63 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "podvm_network_tags" {
  description = "Network tags that select the pod VMs as the rules' targets. cloud-api-adaptor sets no network tags on the VMs it creates, so the default (empty) targets every instance in the network; the sources stay limited to the workers."
  type        = list(string)
  default     = []

  validation {
    condition     = length([for t in var.podvm_network_tags : t if can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", t))]) == length(var.podvm_network_tags)
    error_message = "Every podvm_network_tags entry must be 1 to 63 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "forwarder_port" {
  description = "TCP port of agent-protocol-forwarder on the pod VM (cloud-api-adaptor FORWARDER_PORT)."
  type        = number
  default     = 15150

  validation {
    condition     = var.forwarder_port >= 1 && var.forwarder_port <= 65535 && floor(var.forwarder_port) == var.forwarder_port
    error_message = "The forwarder_port must be an integer port number from 1 to 65535."
  }
}

variable "vxlan_port" {
  description = "UDP port of the pod network VXLAN tunnel from the worker (cloud-api-adaptor VXLAN_PORT); null opens none, for setups without the pod network tunnel."
  type        = number
  default     = 4789

  validation {
    condition     = var.vxlan_port == null ? true : (var.vxlan_port >= 1 && var.vxlan_port <= 65535 && floor(var.vxlan_port) == var.vxlan_port)
    error_message = "The vxlan_port must be null or an integer port number from 1 to 65535."
  }
}

variable "labels" {
  description = "Labels added to the bucket and the image."
  type        = map(string)
  default     = {}
}
