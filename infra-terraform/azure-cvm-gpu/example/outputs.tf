output "relay_url" {
  description = "The relay's public URL: trustbridge proxy --relay URL."
  value       = module.trustbridge.relay_url
}

output "storage_account_name" {
  description = "Storage account to upload the sealed bundle and the binaries to."
  value       = module.trustbridge.storage_account_name
}

output "bundle_source" {
  description = "Where the relay mirrors the sealed bundle from."
  value       = module.trustbridge.bundle_source
}

output "key_vault_uri" {
  description = "URI of the Key Vault holding the exportable key."
  value       = module.trustbridge.key_vault_uri
}

output "model_key_id" {
  description = "Versioned URI of the exportable key with the release policy."
  value       = module.trustbridge.model_key_id
}

output "vm_principal_id" {
  description = "Object ID of the VM's identity, the only one allowed to release the key."
  value       = module.trustbridge.vm_principal_id
}
