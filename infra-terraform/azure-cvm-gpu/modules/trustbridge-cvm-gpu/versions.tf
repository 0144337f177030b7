terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # storage_account_id on containers, https_traffic_only_enabled.
      version = ">= 4.0, < 5.0"
    }
    azapi = {
      source = "Azure/azapi"
      # The exportable key with a release policy: azurerm_key_vault_key has neither
      # `exportable` nor `release_policy` (hashicorp/terraform-provider-azurerm#25054), so the
      # key is created through the Key Vault resource provider's API. 2.x: `body` is an object.
      version = ">= 2.0, < 3.0"
    }
  }
}
