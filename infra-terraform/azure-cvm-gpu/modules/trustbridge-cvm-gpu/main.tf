# TrustBridge on an Azure confidential GPU VM (AMD SEV-SNP, NCCadsH100v5): one confidential
# VM that runs tb-relay, tb-sentinel (--tee azure, through the vTPM) and the inference
# runtime; a Key Vault Premium with an exportable HSM key that only an attested confidential
# VM can have released; a storage account for the sealed bundle and the binaries.
#
# Ports. Clients reach tb-relay's ingress on var.relay_port (8443 by default); that is the
# only inbound rule. Inside the VM everything else is on 127.0.0.1: the sentinel on 8000,
# the relay's egress and bundle listeners on 8001 and 8002, the runtime on 8081. The NSG
# denies every other inbound connection explicitly (before Azure's default
# AllowVnetInBound), and no public SSH is open.

data "azurerm_client_config" "current" {}

data "azurerm_resource_group" "this" {
  name = var.resource_group_name
}

locals {
  tags = merge({ "trustbridge-deployment" = var.name_prefix }, var.tags)

  # Globally unique names derived from the resource group, so re-applying is stable.
  suffix               = substr(sha256(data.azurerm_resource_group.this.id), 0, 8)
  compact_prefix       = substr(replace(var.name_prefix, "-", ""), 0, 12)
  key_vault_name       = "${local.compact_prefix}-kv-${local.suffix}"
  storage_account_name = "${local.compact_prefix}st${local.suffix}"

  bundles_container   = "bundles"
  artifacts_container = "artifacts"
  bundle_prefix       = trim(var.bundle_prefix, "/")

  # The sentinel reaches the broker, and the IMDS for its VCEK, through the relay only.
  broker_host_port = trimsuffix(trimprefix(var.kms_url, "http://"), "/")
  egress_allow     = distinct(concat([local.broker_host_port, "169.254.169.254:80"], var.extra_egress_allow))

  # The release policy as Key Vault stores it: base64url of the JSON, without padding.
  release_policy_data = replace(replace(replace(base64encode(jsonencode(jsondecode(var.release_policy_json))), "+", "-"), "/", "_"), "=", "")
}

# --- Network --------------------------------------------------------------------------

resource "azurerm_public_ip" "relay" {
  name                = "${var.name_prefix}-relay-ip"
  resource_group_name = var.resource_group_name
  location            = var.location
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = local.tags
}

resource "azurerm_network_security_group" "this" {
  name                = "${var.name_prefix}-nsg"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
}

# The only inbound allow: the relay's public port. 8081 (runtime) and 8000 to 8002
# (sentinel, relay egress and bundles) are bound to 127.0.0.1 and never opened here;
# var.relay_port's validation refuses them.
resource "azurerm_network_security_rule" "relay_in" {
  name                        = "AllowTrustBridgeRelay"
  description                 = "TrustBridge relay ingress (OHTTP, attestation bundle, receipts)"
  priority                    = 100
  direction                   = "Inbound"
  access                      = "Allow"
  protocol                    = "Tcp"
  source_port_range           = "*"
  destination_port_range      = var.relay_port
  source_address_prefixes     = var.client_cidrs
  destination_address_prefix  = "*"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.this.name
}

# Everything else inbound is refused, the virtual network included (Azure's default rules
# would let any VM of the network reach every port).
resource "azurerm_network_security_rule" "deny_in" {
  name                        = "DenyAllOtherInbound"
  description                 = "Nothing but the relay's port: no SSH, no runtime, no sentinel port"
  priority                    = 4096
  direction                   = "Inbound"
  access                      = "Deny"
  protocol                    = "*"
  source_port_range           = "*"
  destination_port_range      = "*"
  source_address_prefix       = "*"
  destination_address_prefix  = "*"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.this.name
}

resource "azurerm_network_interface" "this" {
  #checkov:skip=CKV_AZURE_119:The relay is the service's public ingress; it forwards ciphertext only and the NSG opens its port alone.
  name                = "${var.name_prefix}-nic"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = var.subnet_id
    private_ip_address_allocation = "Dynamic"
    public_ip_address_id          = azurerm_public_ip.relay.id
  }
}

resource "azurerm_network_interface_security_group_association" "this" {
  network_interface_id      = azurerm_network_interface.this.id
  network_security_group_id = azurerm_network_security_group.this.id
}

# --- The confidential VM --------------------------------------------------------------

resource "azurerm_linux_virtual_machine" "sentinel" {
  # No Azure Backup, by design: a backup would copy the VM's disk out of the TEE's
  # control; the VM is rebuilt from Terraform and the sealed bundle.
  name                = "${var.name_prefix}-cvm"
  resource_group_name = var.resource_group_name
  location            = var.location
  size                = var.vm_size
  tags                = local.tags

  network_interface_ids = [azurerm_network_interface.this.id]

  admin_username                  = var.admin_username
  disable_password_authentication = true
  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }

  # A confidential VM: Secure Boot and the vTPM on, and the OS disk encrypted together
  # with the VM guest state under a key bound to the vTPM (security type ConfidentialVM).
  secure_boot_enabled = true
  vtpm_enabled        = true

  os_disk {
    name                             = "${var.name_prefix}-osdisk"
    caching                          = "ReadWrite"
    storage_account_type             = "Premium_LRS"
    disk_size_gb                     = var.os_disk_size_gib
    security_encryption_type         = "DiskWithVMGuestState"
    secure_vm_disk_encryption_set_id = var.confidential_disk_encryption_set_id
  }

  source_image_reference {
    publisher = var.source_image.publisher
    offer     = var.source_image.offer
    sku       = var.source_image.sku
    version   = var.source_image.version
  }

  # The key release and the blob reads use this identity.
  identity {
    type = "SystemAssigned"
  }

  # No extensions: nothing the control plane can push into the guest after boot.
  allow_extension_operations = false
  provision_vm_agent         = true

  custom_data = base64encode(templatefile("${path.module}/cloud_init.yaml.tftpl", {
    storage_account     = azurerm_storage_account.this.name
    artifacts_container = local.artifacts_container
    bundles_container   = local.bundles_container
    bundle_prefix       = local.bundle_prefix
    sentinel_blob       = var.sentinel_blob
    sentinel_sha256     = var.sentinel_sha256
    relay_blob          = var.relay_blob
    relay_sha256        = var.relay_sha256
    relay_port          = var.relay_port
    egress_allow        = join(",", local.egress_allow)
    kms_url             = trimsuffix(var.kms_url, "/")
    kms_key             = lower(var.kms_key)
    provider_key        = var.provider_key == null ? "" : lower(var.provider_key)
    asset_id            = var.asset_id
    contract_id         = var.contract_id
    runtime_command     = var.runtime_command
    packages            = var.packages
  }))

  boot_diagnostics {}
}

# --- Key Vault Premium and the exportable key -------------------------------------------

resource "azurerm_key_vault" "this" {
  #checkov:skip=CKV_AZURE_189:Public network access stays on so that service endpoints work; network_acls deny everything but the VM's subnet and var.admin_cidrs.
  #checkov:skip=CKV2_AZURE_32:A private endpoint is the operator's choice; the firewall admits the VM's subnet (service endpoint) and var.admin_cidrs only.
  name                          = local.key_vault_name
  resource_group_name           = var.resource_group_name
  location                      = var.location
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "premium"
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true
  tags                          = local.tags

  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    ip_rules                   = var.admin_cidrs
    virtual_network_subnet_ids = [var.subnet_id]
  }
}

# Whoever runs Terraform manages the key but can never release it.
resource "azurerm_key_vault_access_policy" "deployer" {
  key_vault_id    = azurerm_key_vault.this.id
  tenant_id       = data.azurerm_client_config.current.tenant_id
  object_id       = data.azurerm_client_config.current.object_id
  key_permissions = ["Get", "List", "Create", "Delete", "Update", "Recover", "Purge", "GetRotationPolicy"]
}

# Release only to this VM's identity: on Azure the SNP launch measurement is the
# paravisor's, the same for every confidential VM, so the release policy alone would let
# any tenant's CVM have the key (`trustbridge policy compile` says so).
resource "azurerm_key_vault_access_policy" "sentinel" {
  key_vault_id    = azurerm_key_vault.this.id
  tenant_id       = data.azurerm_client_config.current.tenant_id
  object_id       = azurerm_linux_virtual_machine.sentinel.identity[0].principal_id
  key_permissions = ["Get", "Release"]
}

# azurerm_key_vault_key has neither `exportable` nor `release_policy`, so the key is created
# through the Key Vault resource provider. RSA-HSM: the key lives in the vault's HSMs and
# leaves them only wrapped to an attested TEE.
resource "azapi_resource" "model_key" {
  type      = "Microsoft.KeyVault/vaults/keys@2023-07-01"
  name      = var.key_name
  parent_id = azurerm_key_vault.this.id

  body = {
    properties = {
      kty     = "RSA-HSM"
      keySize = var.key_size
      keyOps  = ["wrapKey", "unwrapKey", "encrypt", "decrypt"]
      attributes = {
        enabled    = true
        exportable = true
      }
      release_policy = {
        contentType = "application/json; charset=utf-8"
        # The output of `trustbridge policy compile --target azure-skr`, validated in
        # variables.tf.
        data = local.release_policy_data
      }
    }
  }

  response_export_values = ["properties.keyUri", "properties.keyUriWithVersion"]

  depends_on = [azurerm_key_vault_access_policy.deployer]
}

# --- Storage for the sealed bundle and the binaries --------------------------------------

resource "azurerm_storage_account" "this" {
  #checkov:skip=CKV2_AZURE_1:The bundle is sealed (AES-256-GCM under the model's data key) before upload; a customer-managed key would add nothing the sentinel relies on.
  #checkov:skip=CKV_AZURE_59:Public network access stays on so that service endpoints work; network_rules deny everything but the VM's subnet and var.admin_cidrs.
  #checkov:skip=CKV2_AZURE_33:A private endpoint is the operator's choice; the firewall admits the VM's subnet (service endpoint) and var.admin_cidrs only.
  #checkov:skip=CKV_AZURE_33:No queues are used; the account holds blobs only.
  #checkov:skip=CKV_AZURE_43:The name is local.storage_account_name: lower-case letters and digits, at most 22 characters (name_prefix's validation plus a hex suffix); checkov cannot evaluate sha256().
  name                              = local.storage_account_name
  resource_group_name               = var.resource_group_name
  location                          = var.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication_type
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  local_user_enabled                = false
  infrastructure_encryption_enabled = true
  public_network_access_enabled     = true
  tags                              = local.tags

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
    # Storage firewalls take single addresses without /32.
    ip_rules                   = [for c in var.admin_cidrs : trimsuffix(c, "/32")]
    virtual_network_subnet_ids = [var.subnet_id]
  }

  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  sas_policy {
    expiration_period = "0.01:00:00"
  }
}

resource "azurerm_storage_container" "bundles" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging needs a Log Analytics workspace outside this module; reads are the relay's mirror of ciphertext.
  name                  = local.bundles_container
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "artifacts" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging needs a Log Analytics workspace outside this module; the binaries are checked against their SHA-256 on the VM.
  name                  = local.artifacts_container
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

# The VM reads the bundle (the relay's mirror) and the binaries (cloud-init) with its
# managed identity; it can write nothing.
resource "azurerm_role_assignment" "vm_blob_reader" {
  scope                = azurerm_storage_account.this.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_linux_virtual_machine.sentinel.identity[0].principal_id
}

resource "azurerm_role_assignment" "uploaders" {
  for_each             = toset(var.uploader_principal_ids)
  scope                = azurerm_storage_account.this.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = each.value
}
