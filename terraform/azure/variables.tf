variable "resource_group_name" {
  description = "Existing resource group for everything this module creates (usually cloud-api-adaptor's AZURE_RESOURCE_GROUP)."
  type        = string

  validation {
    condition     = can(regex("^[-\\w._()]{1,90}$", var.resource_group_name)) && !can(regex("\\.$", var.resource_group_name))
    error_message = "The resource_group_name must be 1 to 90 letters, digits, _ . - ( ) and must not end with a dot."
  }
}

variable "location" {
  description = "Azure region of the storage account, gallery, image and NSG (for example eastus)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "The location must be a region name in lowercase without spaces, such as eastus or westeurope."
  }
}

variable "name_prefix" {
  description = "Prefix for the network security group name."
  type        = string
  default     = "peerpods"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,39}$", var.name_prefix))
    error_message = "The name_prefix must start with a letter and hold at most 40 letters, digits or hyphens."
  }
}

variable "image_path" {
  description = "Local path of the pod VM disk as a fixed-size VHD whose virtual size is a whole number of MiB (qemu-img convert -O vpc -o subformat=fixed,force_size)."
  type        = string

  validation {
    condition     = can(regex("\\.vhd$", var.image_path))
    error_message = "The image_path must name a .vhd file: Azure imports page blobs in fixed VHD format only."
  }
}

variable "storage_account_name" {
  description = "Name of the storage account this module creates to hold the VHD page blob (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "The storage_account_name must be 3 to 24 lowercase letters or digits."
  }
}

variable "container_name" {
  description = "Name of the private blob container for the VHD."
  type        = string
  default     = "podvm-images"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9]|-[a-z0-9]){2,62}$", var.container_name))
    error_message = "The container_name must be 3 to 63 lowercase letters, digits or single hyphens, starting and ending with a letter or digit."
  }
}

variable "gallery_name" {
  description = "Name of the Azure Compute Gallery (Shared Image Gallery) to create."
  type        = string
  default     = "peerpods_gallery"

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9_.]{0,78}[a-zA-Z0-9]$", var.gallery_name))
    error_message = "The gallery_name must be 2 to 80 letters, digits, underscores or periods, starting and ending with a letter or digit."
  }
}

variable "image_definition_name" {
  description = "Name of the gallery image definition."
  type        = string
  default     = "podvm"

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9]$", var.image_definition_name))
    error_message = "The image_definition_name must be 2 to 80 letters, digits, hyphens, underscores or periods, starting and ending with a letter or digit."
  }
}

variable "image_publisher" {
  description = "Publisher part of the image definition's identifier."
  type        = string
  default     = "peerpods"
}

variable "image_offer" {
  description = "Offer part of the image definition's identifier."
  type        = string
  default     = "podvm"
}

variable "image_sku" {
  description = "SKU part of the image definition's identifier."
  type        = string
  default     = "debian-cvm"
}

variable "image_version" {
  description = "Gallery image version to publish, MAJOR.MINOR.PATCH (one per build)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.image_version))
    error_message = "The image_version must be MAJOR.MINOR.PATCH, for example 0.1.0."
  }
}

variable "security_type" {
  description = "Security type of the image definition: ConfidentialVmSupported (boots confidential and trusted-launch VMs) or ConfidentialVM (confidential VMs only). cloud-api-adaptor creates SecurityType ConfidentialVM VMs unless DISABLECVM."
  type        = string
  default     = "ConfidentialVmSupported"

  validation {
    condition     = contains(["ConfidentialVmSupported", "ConfidentialVM"], var.security_type)
    error_message = "The security_type must be ConfidentialVmSupported or ConfidentialVM."
  }
}

variable "replication_regions" {
  description = "Extra regions to replicate the image version to, besides location."
  type        = list(string)
  default     = []
}

variable "replica_count" {
  description = "Replicas of the image version per region (more replicas serve more concurrent VM creations)."
  type        = number
  default     = 1

  validation {
    condition     = var.replica_count >= 1 && var.replica_count <= 100 && floor(var.replica_count) == var.replica_count
    error_message = "The replica_count must be an integer from 1 to 100."
  }
}

variable "worker_subnet_prefixes" {
  description = "Address prefixes (CIDR) of the worker node subnet(s) where cloud-api-adaptor runs: the only sources the pod VM NSG (AZURE_NSG_ID) admits."
  type        = list(string)

  validation {
    condition     = length(var.worker_subnet_prefixes) > 0 && length([for p in var.worker_subnet_prefixes : p if can(cidrhost(p, 0))]) == length(var.worker_subnet_prefixes)
    error_message = "The worker_subnet_prefixes must be a non-empty list of CIDR blocks such as 10.224.0.0/16."
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

variable "tags" {
  description = "Tags added to every resource this module creates."
  type        = map(string)
  default     = {}
}
