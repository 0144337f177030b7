variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "trustbridge"
}

variable "vpc_id" {
  description = "The VPC to deploy into."
  type        = string
}

variable "subnet_id" {
  description = "A public subnet of vpc_id for the parent instance."
  type        = string
}

variable "client_cidrs" {
  description = "IPv4 CIDR blocks allowed to reach the relay's public port."
  type        = list(string)
}

variable "relay_port" {
  description = "The relay's public port (never 8081 or a sentinel-internal port; the module refuses them)."
  type        = number
  default     = 8443
}

variable "instance_type" {
  description = "Enclave-capable EC2 instance type of the parent instance."
  type        = string
  default     = "m6i.2xlarge"
}

variable "enclave_cpu_count" {
  description = "vCPUs given to the enclave."
  type        = number
  default     = 4
}

variable "enclave_memory_mib" {
  description = "Memory given to the enclave, MiB (EIF plus the model's plaintext)."
  type        = number
  default     = 16384
}

variable "instance_role_name" {
  description = "Name of the instance role; the key policy must be compiled with --enclave-role-arn arn:aws:iam::ACCOUNT:role/NAME."
  type        = string
  default     = "trustbridge-enclave"
}

variable "key_policy_file" {
  description = "Path of the key policy JSON printed by `trustbridge policy compile --target aws-kms` (key-policy.json.example shows its shape)."
  type        = string
  default     = "key-policy.json"
}

variable "bundle_bucket_name" {
  description = "Name of the bundle bucket; null for a generated unique name."
  type        = string
  default     = null
}

variable "bundle_prefix" {
  description = "Key prefix of the sealed bundle in the bucket."
  type        = string
  default     = "bundles/acme-llm-v1"
}

variable "eif_sha256" {
  description = "SHA-256 (hex) of sentinel.eif, uploaded to eif/sentinel.eif in the bucket."
  type        = string
}

variable "relay_sha256" {
  description = "SHA-256 (hex) of the tb-relay binary, uploaded to bin/tb-relay in the bucket."
  type        = string
}

variable "egress_allow" {
  description = "HOST:PORT destinations the sentinel may reach through the relay (the key broker)."
  type        = list(string)
}

variable "egress_ports" {
  description = "TCP ports the parent instance may connect to: 443 and the key broker's port."
  type        = list(number)
  default     = [443, 7443]
}
