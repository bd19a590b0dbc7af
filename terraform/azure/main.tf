# Publishes the pod VM image as an Azure Compute Gallery image version that confidential VMs can boot, and
# the network security group cloud-api-adaptor attaches to pod VM NICs (AZURE_NSG_ID).
# Azure builds a gallery image version from a VHD page blob, so the chain is:
# storage account -> container -> page blob -> gallery -> image definition -> image version.

locals {
  target_regions = distinct(concat([var.location], var.replication_regions))
  # The provider takes the definition's SecurityType as two mutually exclusive flags; null leaves one unset.
  confidential_vm_supported = var.security_type == "ConfidentialVmSupported" ? true : null
  confidential_vm_enabled   = var.security_type == "ConfidentialVM" ? true : null
}

resource "azurerm_storage_account" "images" {
  name                            = var.storage_account_name
  resource_group_name             = var.resource_group_name
  location                        = var.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  account_kind                    = "StorageV2"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  tags                            = var.tags
}

resource "azurerm_storage_container" "images" {
  name                  = var.container_name
  storage_account_id    = azurerm_storage_account.images.id
  container_access_type = "private"
}

resource "azurerm_storage_blob" "image" {
  name                   = "${var.image_definition_name}-${var.image_version}.vhd"
  storage_account_name   = azurerm_storage_account.images.name
  storage_container_name = azurerm_storage_container.images.name
  type                   = "Page"
  source                 = var.image_path
}

resource "azurerm_shared_image_gallery" "podvm" {
  name                = var.gallery_name
  resource_group_name = var.resource_group_name
  location            = var.location
  description         = "Confidential Containers peer pod VM images"
  tags                = var.tags
}

# Confidential VMs (SecurityType ConfidentialVM with a vTPM) boot only Gen2 (UEFI) images whose definition
# carries a confidential security type.
resource "azurerm_shared_image" "podvm" {
  name                      = var.image_definition_name
  gallery_name              = azurerm_shared_image_gallery.podvm.name
  resource_group_name       = var.resource_group_name
  location                  = var.location
  os_type                   = "Linux"
  architecture              = "x64"
  hyper_v_generation        = "V2"
  confidential_vm_supported = local.confidential_vm_supported
  confidential_vm_enabled   = local.confidential_vm_enabled

  identifier {
    publisher = var.image_publisher
    offer     = var.image_offer
    sku       = var.image_sku
  }

  tags = var.tags
}

resource "azurerm_shared_image_version" "podvm" {
  name                = var.image_version
  gallery_name        = azurerm_shared_image.podvm.gallery_name
  image_name          = azurerm_shared_image.podvm.name
  resource_group_name = var.resource_group_name
  location            = var.location
  blob_uri            = azurerm_storage_blob.image.url
  storage_account_id  = azurerm_storage_account.images.id

  dynamic "target_region" {
    for_each = local.target_regions
    content {
      name                   = target_region.value
      regional_replica_count = var.replica_count
      storage_account_type   = "Standard_LRS"
    }
  }

  tags = var.tags
}

# Pod VMs accept connections from the worker subnet only: the forwarder (mTLS, from cloud-api-adaptor) and the
# pod network's VXLAN tunnel. The last rule overrides Azure's default AllowVnetInBound, which would otherwise
# admit the whole virtual network.
resource "azurerm_network_security_group" "podvm" {
  name                = "${var.name_prefix}-podvm-nsg"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_network_security_rule" "forwarder" {
  name                        = "allow-forwarder-from-workers"
  description                 = "agent-protocol-forwarder from cloud-api-adaptor on the worker nodes"
  priority                    = 100
  direction                   = "Inbound"
  access                      = "Allow"
  protocol                    = "Tcp"
  source_address_prefixes     = var.worker_subnet_prefixes
  source_port_range           = "*"
  destination_address_prefix  = "*"
  destination_port_range      = tostring(var.forwarder_port)
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.podvm.name
}

resource "azurerm_network_security_rule" "vxlan" {
  count = var.vxlan_port != null ? 1 : 0

  name                        = "allow-vxlan-from-workers"
  description                 = "Pod network VXLAN tunnel from the worker nodes"
  priority                    = 110
  direction                   = "Inbound"
  access                      = "Allow"
  protocol                    = "Udp"
  source_address_prefixes     = var.worker_subnet_prefixes
  source_port_range           = "*"
  destination_address_prefix  = "*"
  destination_port_range      = tostring(var.vxlan_port)
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.podvm.name
}

resource "azurerm_network_security_rule" "deny_other_inbound" {
  name                        = "deny-other-inbound"
  description                 = "Nothing else reaches pod VMs, not even from the virtual network"
  priority                    = 4096
  direction                   = "Inbound"
  access                      = "Deny"
  protocol                    = "*"
  source_address_prefix       = "*"
  source_port_range           = "*"
  destination_address_prefix  = "*"
  destination_port_range      = "*"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.podvm.name
}
