variable "subscription_id" {
  description = "Subscription to publish in (cloud-api-adaptor's AZURE_SUBSCRIPTION_ID)."
  type        = string
}

variable "resource_group_name" {
  description = "Existing resource group (cloud-api-adaptor's AZURE_RESOURCE_GROUP)."
  type        = string
}

variable "location" {
  description = "Region (cloud-api-adaptor's AZURE_REGION)."
  type        = string
  default     = "eastus"
}

variable "image_path" {
  description = "Fixed-size VHD converted from the podvm build's raw image."
  type        = string
}

variable "image_version" {
  description = "Gallery image version for this build."
  type        = string
  default     = "0.1.0"
}

variable "storage_account_name" {
  description = "Storage account to create for the upload (globally unique)."
  type        = string
}

variable "worker_subnet_prefixes" {
  description = "Address prefixes of the worker node subnet."
  type        = list(string)
  default     = ["10.224.0.0/16"]
}
