variable "project_id" {
  description = "Project to publish in (cloud-api-adaptor's GCP_PROJECT_ID)."
  type        = string
}

variable "region" {
  description = "Region of the bucket and of the provider's regional defaults."
  type        = string
  default     = "us-central1"
}

variable "image_path" {
  description = "disk.raw tarball made from the podvm build's raw image."
  type        = string
}

variable "build_id" {
  description = "Distinguishes this build's image name, for example the version and a short hash."
  type        = string
  default     = "0-1-0"
}

variable "bucket_name" {
  description = "Cloud Storage bucket to create for the upload (globally unique)."
  type        = string
}

variable "network" {
  description = "VPC network of the worker nodes (cloud-api-adaptor's GCP_NETWORK)."
  type        = string
  default     = "default"
}

variable "worker_network_tag" {
  description = "Network tag of the worker nodes."
  type        = string
  default     = "peerpods-worker"
}
