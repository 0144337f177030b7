# Inputs of the TrustBridge Azure confidential GPU VM module. Every variable has a
# description, and every security-relevant one a validation (tests/tests/terraform.rs
# checks both).

variable "name_prefix" {
  description = "Prefix of every resource name. Lower-case letters, digits and hyphens; the Key Vault and storage account names also get a suffix derived from the resource group."
  type        = string
  default     = "trustbridge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2 to 16 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "resource_group_name" {
  description = "Existing resource group that receives every resource."
  type        = string
}

variable "location" {
  description = "Azure region. It must offer the VM size (NCCadsH100v5: e.g. eastus2, westeurope) and Key Vault Premium."
  type        = string
}

variable "subnet_id" {
  description = "Subnet of the VM's network interface. It needs the Microsoft.Storage and Microsoft.KeyVault service endpoints: the storage account and the Key Vault admit this subnet and var.admin_cidrs only."
  type        = string
}

variable "client_cidrs" {
  description = "Source CIDR blocks allowed to reach the relay's public port: the only inbound rule. OHTTP keeps requests end-to-end encrypted, so 0.0.0.0/0 is acceptable for a public service."
  type        = list(string)

  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must hold at least one valid CIDR block."
  }
}

variable "relay_port" {
  description = "The relay's public ingress port (tb-relay --ingress tcp://0.0.0.0:PORT; the relay's default is 8443). Never the runtime's 8081, the sentinel's 8000, the relay's egress and bundle ports 8001 and 8002 (all on 127.0.0.1), or SSH's 22."
  type        = number
  default     = 8443

  validation {
    condition     = var.relay_port >= 1 && var.relay_port <= 65535 && floor(var.relay_port) == var.relay_port
    error_message = "relay_port must be a TCP port number (1 to 65535)."
  }

  # Plain comparisons only: tests/tests/terraform.rs evaluates this condition.
  validation {
    condition     = var.relay_port != 22 && var.relay_port != 8000 && var.relay_port != 8001 && var.relay_port != 8002 && var.relay_port != 8081
    error_message = "relay_port must not be 22 (SSH), 8000 (sentinel), 8001 (relay egress), 8002 (relay bundles) or 8081 (runtime): only the relay's public ingress may be opened."
  }
}

variable "vm_size" {
  description = "Confidential VM size: Standard_NCC40ads_H100_v5 (AMD SEV-SNP with an NVIDIA H100 in confidential-computing mode), or a DCasv5/ECasv5 size for a CPU-only sentinel."
  type        = string
  default     = "Standard_NCC40ads_H100_v5"

  validation {
    condition     = can(regex("^Standard_(NCC[0-9]+ads_H100_v5|[DE]C[0-9]+ad?s_v5)$", var.vm_size))
    error_message = "vm_size must be an AMD SEV-SNP confidential size: Standard_NCC40ads_H100_v5, or a DCasv5/DCadsv5/ECasv5/ECadsv5 size."
  }
}

variable "source_image" {
  description = "Marketplace image of the VM: a confidential-VM image (Ubuntu 22.04 CVM by default). cloud-init must be present; the package names in var.packages are Ubuntu 22.04's."
  type = object({
    publisher = string
    offer     = string
    sku       = string
    version   = string
  })
  default = {
    publisher = "Canonical"
    offer     = "0001-com-ubuntu-confidential-vm-jammy"
    sku       = "22_04-lts-cvm"
    version   = "latest"
  }
}

variable "os_disk_size_gib" {
  description = "OS disk size, GiB. It holds the binaries and the relay's mirror of the sealed bundle (ciphertext); the decrypted model lives on tmpfs only."
  type        = number
  default     = 256

  validation {
    condition     = var.os_disk_size_gib >= 30
    error_message = "os_disk_size_gib must be at least 30."
  }
}

variable "confidential_disk_encryption_set_id" {
  description = "Disk encryption set (customer-managed key) for the confidential OS disk encryption. Null: the OS disk and VM guest state are encrypted with a platform-managed key bound to the VM's vTPM."
  type        = string
  default     = null
}

variable "admin_username" {
  description = "The VM's administrator account. No inbound SSH is open (the NSG denies everything but the relay's port): use the serial console when needed."
  type        = string
  default     = "tbadmin"
}

variable "admin_ssh_public_key" {
  description = "OpenSSH public key of the administrator account (Azure requires one; password authentication is disabled)."
  type        = string

  validation {
    condition     = can(regex("^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp[0-9]+) ", var.admin_ssh_public_key))
    error_message = "admin_ssh_public_key must be an OpenSSH public key."
  }
}

variable "admin_cidrs" {
  description = "Public IPv4 addresses or CIDR blocks (of whoever runs Terraform and uploads artifacts) admitted through the Key Vault and storage account firewalls. Everything else but the VM's subnet is denied."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(strcontains(c, "/") ? c : "${c}/32", 0))])
    error_message = "admin_cidrs must be IPv4 addresses or CIDR blocks."
  }
}

variable "uploader_principal_ids" {
  description = "Entra ID object IDs that may write blobs (Storage Blob Data Contributor on the storage account): whoever uploads the sealed bundle and the binaries."
  type        = list(string)
  default     = []
}

variable "release_policy_json" {
  description = "The Secure Key Release policy: the JSON printed by `trustbridge policy compile --target azure-skr --maa-endpoint URL`. Refused unless every alternative requires an Azure-compliant SEV-SNP confidential VM, a launch measurement and a non-debuggable guest, attested by an https authority."
  type        = string
  nullable    = false

  validation {
    condition     = can(jsondecode(var.release_policy_json).anyOf[0]) && try(jsondecode(var.release_policy_json).version, "") != ""
    error_message = "release_policy_json must be an SKR policy with a version and a non-empty anyOf (the output of `trustbridge policy compile --target azure-skr`)."
  }

  validation {
    condition = alltrue([
      for alt in try(jsondecode(var.release_policy_json).anyOf, []) : (
        startswith(try(alt.authority, ""), "https://")
        && contains([for c in try(alt.allOf, []) : "${try(c.claim, "")}=${jsonencode(try(c.equals, null))}"], "x-ms-isolation-tee.x-ms-attestation-type=\"sevsnpvm\"")
        && contains([for c in try(alt.allOf, []) : "${try(c.claim, "")}=${jsonencode(try(c.equals, null))}"], "x-ms-isolation-tee.x-ms-compliance-status=\"azure-compliant-cvm\"")
        && contains([for c in try(alt.allOf, []) : "${try(c.claim, "")}=${jsonencode(try(c.equals, null))}"], "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable=false")
        && length([for c in try(alt.allOf, []) : c if try(c.claim, "") == "x-ms-isolation-tee.x-ms-sevsnpvm-launchmeasurement" && try(c.equals, "") != ""]) > 0
      )
    ])
    error_message = "release_policy_json has an alternative that does not require (in its allOf) x-ms-attestation-type = sevsnpvm, x-ms-compliance-status = azure-compliant-cvm, x-ms-sevsnpvm-is-debuggable = false and a launch measurement, from an https:// authority: the key could be released outside a confidential VM. Compile the policy with `trustbridge policy compile --target azure-skr`."
  }
}

variable "key_name" {
  description = "Name of the exportable RSA-HSM key in the Key Vault. Key Vault's resource-manager API creates a key once and never updates it: change the release policy of an existing key through Key Vault's data plane (docs/DEPLOY-AZURE.md)."
  type        = string
  default     = "trustbridge-model-key"

  validation {
    condition     = can(regex("^[A-Za-z0-9-]{1,127}$", var.key_name))
    error_message = "key_name must be 1 to 127 letters, digits or hyphens."
  }
}

variable "key_size" {
  description = "Size of the RSA-HSM key, bits."
  type        = number
  default     = 3072

  validation {
    condition     = contains([2048, 3072, 4096], var.key_size)
    error_message = "key_size must be 2048, 3072 or 4096."
  }
}

variable "storage_replication_type" {
  description = "Replication of the bundle storage account (GRS, RAGRS, GZRS or RAGZRS: geo-redundant)."
  type        = string
  default     = "GRS"

  validation {
    condition     = contains(["GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be GRS, RAGRS, GZRS or RAGZRS."
  }
}

variable "bundle_prefix" {
  description = "Blob prefix of the sealed bundle in the bundles container (manifest.cose and the *.sealed files); the relay mirrors az://bundles/PREFIX."
  type        = string

  validation {
    condition     = length(trim(var.bundle_prefix, "/")) > 0 && !can(regex("\\.\\.", var.bundle_prefix))
    error_message = "bundle_prefix must be a non-empty blob prefix without \"..\"."
  }
}

variable "sentinel_blob" {
  description = "Blob name, in the artifacts container, of tb-sentinel built with the Azure vTPM attester (`cargo build --release -p trustbridge-enclave --features azure-vtpm`, for the image's glibc)."
  type        = string
  default     = "bin/tb-sentinel"
}

variable "sentinel_sha256" {
  description = "SHA-256 (hex) of the tb-sentinel binary, checked by cloud-init before it is installed."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.sentinel_sha256))
    error_message = "sentinel_sha256 must be 64 lower-case hex characters (sha256sum tb-sentinel)."
  }
}

variable "relay_blob" {
  description = "Blob name, in the artifacts container, of the tb-relay binary."
  type        = string
  default     = "bin/tb-relay"
}

variable "relay_sha256" {
  description = "SHA-256 (hex) of the tb-relay binary, checked by cloud-init before it is installed."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.relay_sha256))
    error_message = "relay_sha256 must be 64 lower-case hex characters (sha256sum tb-relay)."
  }
}

variable "kms_url" {
  description = "The key broker the sentinel asks for the model key (TB_KMS_URL), http://HOST:PORT. Its HOST:PORT is put on the relay's egress allow-list."
  type        = string

  validation {
    condition     = can(regex("^http://[A-Za-z0-9.-]+:[0-9]{1,5}/?$", var.kms_url))
    error_message = "kms_url must be http://HOST:PORT (the broker's answers are signed; the sentinel pins kms_key)."
  }
}

variable "kms_key" {
  description = "The key broker's identity key (TB_KMS_KEY, 64 hex: `tb-kms identity`). The sentinel believes only answers this key signs."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{64}$", var.kms_key))
    error_message = "kms_key must be 64 hex characters."
  }
}

variable "provider_key" {
  description = "Optional provider key (TB_PROVIDER_KEY, 64 hex): serve only models signed by it. Null: whichever provider the broker names."
  type        = string
  default     = null

  validation {
    condition     = var.provider_key == null || can(regex("^[0-9a-fA-F]{64}$", var.provider_key))
    error_message = "provider_key must be 64 hex characters or null."
  }
}

variable "asset_id" {
  description = "The asset the sentinel serves (TB_ASSET_ID), e.g. acme/llm@v1."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9@/._:+-]{1,200}$", var.asset_id))
    error_message = "asset_id may hold letters, digits and @ / . _ : + - only."
  }
}

variable "contract_id" {
  description = "The contract the key is released under (TB_CONTRACT_ID)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9@/._:+-]{1,200}$", var.contract_id))
    error_message = "contract_id may hold letters, digits and @ / . _ : + - only."
  }
}

variable "extra_egress_allow" {
  description = "More HOST:PORT destinations the sentinel may reach through the relay's egress, besides the broker (from kms_url) and the Azure IMDS (169.254.169.254:80, for the VCEK), which are always allowed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for d in var.extra_egress_allow : can(regex("^[A-Za-z0-9.-]+:[0-9]{1,5}$", d))])
    error_message = "Each extra_egress_allow entry must be HOST:PORT."
  }
}

variable "runtime_command" {
  description = "Command line of the inference runtime (vLLM, Triton, `trustbridge runtime`) that serves the model from /run/trustbridge-model/model on 127.0.0.1:8081, e.g. \"vllm serve /run/trustbridge-model/model --host 127.0.0.1 --port 8081\". It runs as the sentinel's user with network access to loopback only. Empty: no runtime unit (install one yourself)."
  type        = string
  default     = ""

  validation {
    condition     = var.runtime_command == "" || (strcontains(var.runtime_command, "127.0.0.1") && !strcontains(var.runtime_command, "0.0.0.0") && !can(regex("[\\n\\r]", var.runtime_command)))
    error_message = "runtime_command must bind the runtime to 127.0.0.1 (never 0.0.0.0) and be one line."
  }
}

variable "packages" {
  description = "Ubuntu packages cloud-init installs: the tpm2-tss libraries tb-sentinel's Azure vTPM attester links against."
  type        = list(string)
  default     = ["libtss2-esys-3.0.2-0", "libtss2-tctildr0", "libtss2-mu0", "libtss2-tcti-device0"]
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
