# Inputs of the TrustBridge Nitro Enclaves module. Every variable has a description, and
# every security-relevant one a validation (tests/tests/terraform.rs checks both).

variable "name_prefix" {
  description = "Prefix of every resource name (security group, instance, KMS alias, bucket prefix). Lower-case letters, digits and hyphens."
  type        = string
  default     = "trustbridge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2 to 32 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "The VPC of the parent instance's security group."
  type        = string
}

variable "subnet_id" {
  description = "The subnet of the parent instance. A public subnet when clients reach the relay directly (associate_public_ip = true)."
  type        = string
}

variable "client_cidrs" {
  description = "IPv4 CIDR blocks allowed to reach the relay's public port. This is the only ingress the security group opens; OHTTP keeps requests end-to-end encrypted, so 0.0.0.0/0 is acceptable for a public service."
  type        = list(string)

  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must hold at least one valid IPv4 CIDR block."
  }
}

variable "relay_port" {
  description = "The relay's public ingress port (tb-relay --ingress tcp://0.0.0.0:PORT; the relay's default is 8443). Never the runtime's 8081, the sentinel's 8000, the relay's egress and bundle ports 8001 and 8002, or SSH's 22."
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

variable "associate_public_ip" {
  description = "Give the parent instance a public IPv4 address so that clients reach the relay directly. Set false behind a load balancer or inside a private network."
  type        = bool
  default     = true
}

variable "instance_type" {
  description = "EC2 instance type of the parent instance. Must support Nitro Enclaves (Nitro-based, at least 4 vCPUs; not burstable t-types)."
  type        = string
  default     = "m6i.2xlarge"

  validation {
    condition     = !can(regex("^(t[0-9]|a1)\\.", var.instance_type))
    error_message = "Burstable (t*) and a1 instance types do not support Nitro Enclaves."
  }
}

variable "ami_ssm_parameter" {
  description = "SSM public parameter naming the parent instance's AMI. The user data expects Amazon Linux 2023 (dnf, aws-nitro-enclaves-cli, AWS CLI v2)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

variable "root_volume_size_gib" {
  description = "Size of the parent instance's encrypted root volume, GiB. Holds the EIF and the relay's mirror of the sealed bundle (ciphertext only)."
  type        = number
  default     = 64

  validation {
    condition     = var.root_volume_size_gib >= 16
    error_message = "root_volume_size_gib must be at least 16."
  }
}

variable "enclave_cpu_count" {
  description = "vCPUs given to the enclave (nitro-enclaves-allocator and nitro-cli run-enclave --cpu-count). An even number, fewer than the instance has."
  type        = number
  default     = 4

  validation {
    condition     = var.enclave_cpu_count >= 2 && var.enclave_cpu_count % 2 == 0
    error_message = "enclave_cpu_count must be an even number, at least 2."
  }
}

variable "enclave_memory_mib" {
  description = "Memory given to the enclave, MiB (nitro-cli run-enclave --memory). The decrypted model lives in enclave memory, so this must exceed the EIF size plus the model's plaintext size."
  type        = number
  default     = 16384

  validation {
    condition     = var.enclave_memory_mib >= 1024
    error_message = "enclave_memory_mib must be at least 1024."
  }
}

variable "enclave_cid" {
  description = "vsock CID of the enclave. tb-relay's default --sentinel is vsock://16:8000, so 16 needs no relay setting."
  type        = number
  default     = 16

  validation {
    condition     = var.enclave_cid >= 4 && var.enclave_cid < 4294967295
    error_message = "enclave_cid must be at least 4 (0 to 3 are reserved)."
  }
}

variable "instance_role_name" {
  description = "Name of the parent instance's IAM role: the principal that `trustbridge policy compile --target aws-kms --enclave-role-arn` names. The module checks that the key policy grants decryption to this role only."
  type        = string
  default     = "trustbridge-enclave"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.instance_role_name))
    error_message = "instance_role_name must be a valid IAM role name (1 to 64 characters)."
  }
}

variable "key_policy_json" {
  description = "The KMS key policy: the JSON printed by `trustbridge policy compile --target aws-kms --enclave-role-arn ARN --key-admin-arn ARN`. Refused when any statement allows kms:Decrypt (or kms:ReEncryptFrom, kms:CreateGrant, or uses NotAction/NotPrincipal) without a StringEquals(IgnoreCase) condition on a kms:RecipientAttestation key."
  type        = string
  nullable    = false

  validation {
    condition     = can(jsondecode(var.key_policy_json).Statement)
    error_message = "key_policy_json must be a JSON key policy with a Statement (the output of `trustbridge policy compile --target aws-kms`)."
  }

  # A statement that lets a principal decrypt must carry an attestation condition. Decrypt
  # rights: an Allow whose actions match kms:Decrypt, kms:ReEncryptFrom or kms:CreateGrant (wildcards
  # included), or any Allow with NotAction/NotPrincipal. Attestation condition: a
  # StringEquals or StringEqualsIgnoreCase operator (not ...IfExists, which passes when the
  # key is absent) on a kms:RecipientAttestation:* key.
  validation {
    condition = alltrue([
      for s in flatten([try(jsondecode(var.key_policy_json).Statement, [])]) : (
        try(s.Effect, "") != "Allow"
        || (
          try(s.NotAction, null) == null
          && try(s.NotPrincipal, null) == null
          && !anytrue([
            for a in flatten([try(s.Action, [])]) : anytrue([
              for wanted in ["kms:decrypt", "kms:reencryptfrom", "kms:creategrant"] :
              can(regex("^${replace(replace(lower(a), "*", ".*"), "?", ".")}$", wanted))
            ])
          ])
        )
        || length([
          for op, keys in try(s.Condition, {}) : op
          if contains(["StringEquals", "StringEqualsIgnoreCase"], op)
          && length([for k, v in keys : k if startswith(lower(k), "kms:recipientattestation:") && v != ""]) > 0
        ]) > 0
      )
    ])
    error_message = "key_policy_json has a statement that allows kms:Decrypt (or kms:ReEncryptFrom, kms:CreateGrant, or NotAction/NotPrincipal) without a StringEquals(IgnoreCase) condition on kms:RecipientAttestation:*: that principal could decrypt outside an attested enclave. Compile the policy with `trustbridge policy compile --target aws-kms`."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the attested KMS key is deleted after `terraform destroy` (7 to 30 days)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "bundle_bucket_name" {
  description = "Name of the private S3 bucket for sealed bundles, the EIF and the relay binary. Null: a unique name starting with \"<name_prefix>-bundles-\"."
  type        = string
  default     = null
}

variable "bundle_prefix" {
  description = "Key prefix of the sealed bundle in the bucket (manifest.cose and the *.sealed files); the relay mirrors s3://BUCKET/PREFIX."
  type        = string

  validation {
    condition     = length(trim(var.bundle_prefix, "/")) > 0 && !can(regex("\\.\\.", var.bundle_prefix))
    error_message = "bundle_prefix must be a non-empty key prefix without \"..\"."
  }
}

variable "access_log_bucket" {
  description = "Existing S3 bucket that receives the bundle bucket's server access logs. Null: no access logging."
  type        = string
  default     = null
}

variable "eif_object_key" {
  description = "Key of the sentinel's Enclave Image File in the bucket (upload it before the instance boots)."
  type        = string
  default     = "eif/sentinel.eif"
}

variable "eif_sha256" {
  description = "SHA-256 (hex) of the EIF file, checked by the user data before the enclave starts. Integrity only: what the KMS key and clients trust are the EIF's PCRs."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.eif_sha256))
    error_message = "eif_sha256 must be 64 lower-case hex characters (sha256sum sentinel.eif)."
  }
}

variable "relay_object_key" {
  description = "Key of the tb-relay binary (x86_64 Linux, `cargo build --release -p trustbridge-relay`) in the bucket."
  type        = string
  default     = "bin/tb-relay"
}

variable "relay_sha256" {
  description = "SHA-256 (hex) of the tb-relay binary, checked by the user data before it is installed."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.relay_sha256))
    error_message = "relay_sha256 must be 64 lower-case hex characters (sha256sum tb-relay)."
  }
}

variable "egress_allow" {
  description = "HOST:PORT destinations the sentinel may reach through the relay's egress (tb-relay --egress-allow): the key broker (TB_KMS_URL's host and port) and, for the KMS path, kms.REGION.amazonaws.com:443. Nothing else is reachable from the enclave."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for d in var.egress_allow : can(regex("^[A-Za-z0-9.-]+:[0-9]{1,5}$", d))])
    error_message = "Each egress_allow entry must be HOST:PORT."
  }
}

variable "egress_cidrs" {
  description = "IPv4 CIDR blocks the parent instance may connect to (S3, KMS, SSM, the package repositories and the key broker)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.egress_cidrs : can(cidrhost(c, 0))])
    error_message = "egress_cidrs must be valid IPv4 CIDR blocks."
  }
}

variable "egress_ports" {
  description = "TCP ports the parent instance may connect to on egress_cidrs: 443 for AWS APIs and packages, plus the key broker's port (e.g. 7443)."
  type        = list(number)
  default     = [443]

  validation {
    condition     = length(var.egress_ports) > 0 && alltrue([for p in var.egress_ports : p >= 1 && p <= 65535])
    error_message = "egress_ports must hold TCP port numbers."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
