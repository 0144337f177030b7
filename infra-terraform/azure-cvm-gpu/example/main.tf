# Example: TrustBridge on an Azure confidential GPU VM, with its own resource group and
# virtual network.
#
#   trustbridge policy compile --policy policy.toml --target azure-skr \
#       --maa-endpoint https://sharedeus2.eus2.attest.azure.net > release-policy.json
#   cp terraform.tfvars.example terraform.tfvars   # and edit it
#   terraform init && terraform apply
#
# docs/DEPLOY-AZURE.md walks through every step, from the binaries to a verified answer.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.0, < 5.0"
    }
    azapi = {
      source  = "Azure/azapi"
      version = ">= 2.0, < 3.0"
    }
  }
}

provider "azurerm" {
  features {}
  subscription_id = var.subscription_id
  # The storage account has no shared keys: the provider reads it with Entra ID.
  storage_use_azuread = true
}

provider "azapi" {}

data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "this" {
  name     = var.resource_group_name
  location = var.location
}

resource "azurerm_virtual_network" "this" {
  name                = "${var.name_prefix}-vnet"
  resource_group_name = azurerm_resource_group.this.name
  location            = azurerm_resource_group.this.location
  address_space       = [var.address_space]
}

resource "azurerm_subnet" "sentinel" {
  name                 = "${var.name_prefix}-sentinel"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.address_space, 8, 1)]
  # The storage account and the Key Vault admit this subnet through service endpoints.
  service_endpoints = ["Microsoft.Storage", "Microsoft.KeyVault"]
}

# The module's NSG guards the subnet as well as the VM's network interface.
resource "azurerm_subnet_network_security_group_association" "sentinel" {
  subnet_id                 = azurerm_subnet.sentinel.id
  network_security_group_id = module.trustbridge.network_security_group_id
}

module "trustbridge" {
  source = "../modules/trustbridge-cvm-gpu"

  name_prefix          = var.name_prefix
  resource_group_name  = azurerm_resource_group.this.name
  location             = azurerm_resource_group.this.location
  subnet_id            = azurerm_subnet.sentinel.id
  vm_size              = var.vm_size
  client_cidrs         = var.client_cidrs
  relay_port           = var.relay_port
  admin_ssh_public_key = var.admin_ssh_public_key
  admin_cidrs          = var.admin_cidrs

  # Whoever runs Terraform uploads the bundle and the binaries.
  uploader_principal_ids = [data.azurerm_client_config.current.object_id]

  # The JSON `trustbridge policy compile --target azure-skr` printed. The module refuses a
  # policy that would release the key outside a non-debuggable confidential VM.
  release_policy_json = file(var.release_policy_file)

  bundle_prefix   = var.bundle_prefix
  sentinel_sha256 = var.sentinel_sha256
  relay_sha256    = var.relay_sha256
  kms_url         = var.kms_url
  kms_key         = var.kms_key
  provider_key    = var.provider_key
  asset_id        = var.asset_id
  contract_id     = var.contract_id
  runtime_command = var.runtime_command
}
