terraform {
  required_version = ">= 1.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # azurerm_storage_container.storage_account_id arrived in 4.9.
      version = ">= 4.9, < 5.0"
    }
  }
}
