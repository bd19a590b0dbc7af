output "image_name" {
  description = "Name of the pod VM image: cloud-api-adaptor's PODVM_IMAGE_NAME."
  value       = google_compute_image.podvm.name
}

output "image_self_link" {
  description = "Full URI of the pod VM image."
  value       = google_compute_image.podvm.self_link
}

output "image_bucket" {
  description = "Name of the bucket holding the image tarball."
  value       = google_storage_bucket.images.name
}

output "image_object" {
  description = "Object name of the uploaded image tarball."
  value       = google_storage_bucket_object.image.name
}

output "firewall_rule_names" {
  description = "Names of the ingress firewall rules that admit the worker nodes."
  value       = concat([google_compute_firewall.forwarder.name], google_compute_firewall.vxlan[*].name)
}

output "caa_env" {
  description = "cloud-api-adaptor settings for the gcp provider, by environment variable name, for what this module published."
  value = {
    PODVM_IMAGE_NAME = google_compute_image.podvm.name
    GCP_NETWORK      = var.network
  }
}
