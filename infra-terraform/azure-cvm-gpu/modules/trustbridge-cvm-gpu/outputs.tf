output "vm_id" {
  description = "Resource ID of the confidential VM."
  value       = azurerm_linux_virtual_machine.sentinel.id
}

output "vm_principal_id" {
  description = "Object ID of the VM's system-assigned identity: the only principal allowed to release the key."
  value       = azurerm_linux_virtual_machine.sentinel.identity[0].principal_id
}

output "public_ip" {
  description = "Public IPv4 address of the relay."
  value       = azurerm_public_ip.relay.ip_address
}

output "relay_url" {
  description = "The relay's public URL, for `trustbridge proxy --relay` and `tb-verify log` (plain HTTP: OHTTP encrypts every request end to end)."
  value       = "http://${azurerm_public_ip.relay.ip_address}:${var.relay_port}"
}

output "relay_port" {
  description = "The relay's public port, the only inbound port the NSG allows."
  value       = var.relay_port
}

output "network_security_group_id" {
  description = "ID of the NSG on the VM's network interface (associate it with the subnet too)."
  value       = azurerm_network_security_group.this.id
}

output "key_vault_id" {
  description = "Resource ID of the Key Vault Premium."
  value       = azurerm_key_vault.this.id
}

output "key_vault_uri" {
  description = "URI of the Key Vault (data plane)."
  value       = azurerm_key_vault.this.vault_uri
}

output "model_key_id" {
  description = "Versioned URI of the exportable RSA-HSM key that carries the release policy."
  value       = azapi_resource.model_key.output.properties.keyUriWithVersion
}

output "storage_account_name" {
  description = "Name of the storage account for the sealed bundle and the binaries."
  value       = azurerm_storage_account.this.name
}

output "bundles_container" {
  description = "Container of the sealed bundle (upload under bundle_prefix)."
  value       = azurerm_storage_container.bundles.name
}

output "artifacts_container" {
  description = "Container of the tb-sentinel and tb-relay binaries."
  value       = azurerm_storage_container.artifacts.name
}

output "bundle_source" {
  description = "Where the relay mirrors the sealed bundle from (tb-relay --bundle-source)."
  value       = "az://${azurerm_storage_container.bundles.name}/${local.bundle_prefix}"
}
