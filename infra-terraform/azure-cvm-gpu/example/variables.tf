variable "subscription_id" {
  description = "Azure subscription to deploy to."
  type        = string
}

variable "location" {
  description = "Azure region offering the VM size (NCCadsH100v5: e.g. eastus2, westeurope)."
  type        = string
  default     = "eastus2"
}

variable "resource_group_name" {
  description = "Name of the resource group the example creates."
  type        = string
  default     = "trustbridge"
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "trustbridge"
}

variable "address_space" {
  description = "Address space of the virtual network the example creates (a /16; the VM's subnet is its second /24)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "vm_size" {
  description = "Confidential VM size (Standard_NCC40ads_H100_v5, or a DCasv5/ECasv5 size without GPU)."
  type        = string
  default     = "Standard_NCC40ads_H100_v5"
}

variable "client_cidrs" {
  description = "Source CIDR blocks allowed to reach the relay's public port."
  type        = list(string)
}

variable "relay_port" {
  description = "The relay's public port (never 8081 or a sentinel-internal port; the module refuses them)."
  type        = number
  default     = 8443
}

variable "admin_ssh_public_key" {
  description = "OpenSSH public key of the VM's administrator (no inbound SSH is opened)."
  type        = string
}

variable "admin_cidrs" {
  description = "Your public IPv4 address(es), admitted through the Key Vault and storage firewalls to create the key and upload artifacts."
  type        = list(string)
}

variable "release_policy_file" {
  description = "Path of the release policy JSON printed by `trustbridge policy compile --target azure-skr` (release-policy.json.example shows its shape)."
  type        = string
  default     = "release-policy.json"
}

variable "bundle_prefix" {
  description = "Blob prefix of the sealed bundle in the bundles container."
  type        = string
  default     = "acme-llm-v1"
}

variable "sentinel_sha256" {
  description = "SHA-256 (hex) of tb-sentinel (built with --features azure-vtpm), uploaded as bin/tb-sentinel."
  type        = string
}

variable "relay_sha256" {
  description = "SHA-256 (hex) of tb-relay, uploaded as bin/tb-relay."
  type        = string
}

variable "kms_url" {
  description = "The key broker, http://HOST:PORT."
  type        = string
}

variable "kms_key" {
  description = "The key broker's identity key (`tb-kms identity`)."
  type        = string
}

variable "provider_key" {
  description = "Optional provider key the sentinel pins (64 hex), or null."
  type        = string
  default     = null
}

variable "asset_id" {
  description = "The asset the sentinel serves."
  type        = string
}

variable "contract_id" {
  description = "The contract the key is released under."
  type        = string
}

variable "runtime_command" {
  description = "The inference runtime's command line, bound to 127.0.0.1:8081; empty for none."
  type        = string
  default     = ""
}
