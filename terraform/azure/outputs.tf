output "image_id" {
  description = "Resource id of the gallery image version: cloud-api-adaptor's AZURE_IMAGE_ID."
  value       = azurerm_shared_image_version.podvm.id
}

output "image_definition_id" {
  description = "Resource id of the gallery image definition."
  value       = azurerm_shared_image.podvm.id
}

output "gallery_name" {
  description = "Name of the Azure Compute Gallery."
  value       = azurerm_shared_image_gallery.podvm.name
}

output "blob_url" {
  description = "URL of the uploaded VHD page blob (private)."
  value       = azurerm_storage_blob.image.url
}

output "network_security_group_id" {
  description = "Id of the pod VM network security group: cloud-api-adaptor's AZURE_NSG_ID."
  value       = azurerm_network_security_group.podvm.id
}

output "caa_env" {
  description = "cloud-api-adaptor settings for the azure provider, by environment variable name, for what this module created."
  value = {
    AZURE_IMAGE_ID = azurerm_shared_image_version.podvm.id
    AZURE_NSG_ID   = azurerm_network_security_group.podvm.id
  }
}
