variable "name_prefix" {
  description = "Prefix for the names of the IAM role policy, security group, VPC and subnet this module creates."
  type        = string
  default     = "peerpods"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,30}$", var.name_prefix))
    error_message = "The name_prefix must start with a letter and hold at most 31 letters, digits or hyphens."
  }
}

variable "image_path" {
  description = "Local path of the pod VM disk image in raw format (the podvm build's .raw output)."
  type        = string

  validation {
    condition     = can(regex("\\.(raw|img)$", var.image_path))
    error_message = "The image_path must name a raw disk image ending in .raw or .img: EC2 snapshot import is set to format RAW."
  }
}

variable "image_sha256" {
  description = "SHA-256 of the image file (from the podvm build manifest). Used as the upload's change trigger so plans need not hash the multi-GB file; null hashes the file with filemd5() instead."
  type        = string
  default     = null

  validation {
    condition     = var.image_sha256 == null ? true : can(regex("^[0-9a-f]{64}$", var.image_sha256))
    error_message = "The image_sha256 must be 64 lowercase hex digits."
  }
}

variable "image_name" {
  description = "AMI name, also the S3 object name. AMI names are unique per region, so use one per build (for example podvm-0.1.0-1a2b3c4)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9()\\[\\]./_' @-]{3,128}$", var.image_name))
    error_message = "The image_name must be 3 to 128 characters from letters, digits and ( ) [ ] . / - ' @ _ or space (EC2 AMI name rules)."
  }
}

variable "bucket_name" {
  description = "Name of the S3 bucket this module creates to stage the raw image for EC2 snapshot import."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "The bucket_name must be 3 to 63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit."
  }
}

variable "force_destroy_bucket" {
  description = "Allow terraform destroy to delete the bucket while it still holds objects."
  type        = bool
  default     = false
}

variable "create_vmimport_role" {
  description = "Create the IAM service role that VM Import/Export assumes. Set false when the account already has it (it is account-wide); the module then only attaches its bucket policy to the role named vmimport_role_name."
  type        = bool
  default     = true
}

variable "vmimport_role_name" {
  description = "Name of the VM Import/Export service role (EC2 looks for vmimport unless told otherwise)."
  type        = string
  default     = "vmimport"

  validation {
    condition     = can(regex("^[a-zA-Z0-9+=,.@_-]{1,64}$", var.vmimport_role_name))
    error_message = "The vmimport_role_name must be 1 to 64 characters from letters, digits and + = , . @ _ -."
  }
}

variable "kms_key_arn" {
  description = "KMS key ARN to encrypt the imported snapshot with; null leaves it unencrypted (the pod VM image holds no secrets: they arrive after attestation)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "The kms_key_arn must be a KMS key ARN (arn:aws:kms:...)."
  }
}

variable "root_device_name" {
  description = "Root device name of the AMI; the provider sizes the root volume on this device."
  type        = string
  default     = "/dev/xvda"

  validation {
    condition     = can(regex("^/dev/(xvd|sd)[a-z]$", var.root_device_name))
    error_message = "The root_device_name must look like /dev/xvda or /dev/sda."
  }
}

variable "create_vpc" {
  description = "Create a VPC (with an internet gateway and a default route) for the pod VMs and worker nodes. When false, vpc_id names an existing one."
  type        = bool
  default     = false
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC created when create_vpc is true."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "The vpc_cidr must be an IPv4 CIDR block such as 10.0.0.0/16."
  }
}

variable "vpc_id" {
  description = "Existing VPC of the worker nodes, used for the subnet and security group when create_vpc is false."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null ? true : can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "The vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_cidr" {
  description = "CIDR block of a pod VM subnet to create in the VPC (AWS_SUBNET_ID); null creates no subnet."
  type        = string
  default     = null

  validation {
    condition     = var.subnet_cidr == null ? true : can(cidrhost(var.subnet_cidr, 0))
    error_message = "The subnet_cidr must be an IPv4 CIDR block such as 10.0.1.0/24."
  }
}

variable "availability_zone" {
  description = "Availability zone of the created subnet; null lets EC2 choose."
  type        = string
  default     = null
}

variable "worker_security_group_id" {
  description = "Security group of the worker nodes (where cloud-api-adaptor runs). When set, the module creates the pod VM security group (AWS_SG_IDS) whose only ingress is from this group."
  type        = string
  default     = null

  validation {
    condition     = var.worker_security_group_id == null ? true : can(regex("^sg-[0-9a-f]{8,17}$", var.worker_security_group_id))
    error_message = "The worker_security_group_id must look like sg-0123456789abcdef0."
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

variable "egress_cidr_blocks" {
  description = "IPv4 destinations the pod VMs may reach (container registries, the KBS); the default allows all."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length([for c in var.egress_cidr_blocks : c if can(cidrhost(c, 0))]) == length(var.egress_cidr_blocks)
    error_message = "Every egress_cidr_blocks entry must be an IPv4 CIDR block."
  }
}

variable "tags" {
  description = "Tags added to every resource this module creates."
  type        = map(string)
  default     = {}
}
