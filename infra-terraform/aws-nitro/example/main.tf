# Example: TrustBridge on AWS Nitro Enclaves in an existing VPC and subnet.
#
#   trustbridge policy compile --policy policy.toml --target aws-kms \
#       --enclave-role-arn arn:aws:iam::ACCOUNT:role/trustbridge-enclave \
#       --key-admin-arn ARN_THAT_RUNS_TERRAFORM > key-policy.json
#   cp terraform.tfvars.example terraform.tfvars   # and edit it
#   terraform init && terraform apply
#
# docs/DEPLOY-AWS.md walks through every step, from the EIF to a verified answer.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = { Project = "trustbridge" }
  }
}

module "trustbridge" {
  source = "../modules/trustbridge-nitro"

  name_prefix        = var.name_prefix
  vpc_id             = var.vpc_id
  subnet_id          = var.subnet_id
  client_cidrs       = var.client_cidrs
  relay_port         = var.relay_port
  instance_type      = var.instance_type
  enclave_cpu_count  = var.enclave_cpu_count
  enclave_memory_mib = var.enclave_memory_mib
  instance_role_name = var.instance_role_name

  # The JSON `trustbridge policy compile --target aws-kms` printed. The module refuses a
  # policy that lets any principal decrypt without an attestation condition.
  key_policy_json = file(var.key_policy_file)

  bundle_bucket_name = var.bundle_bucket_name
  bundle_prefix      = var.bundle_prefix
  eif_sha256         = var.eif_sha256
  relay_sha256       = var.relay_sha256
  egress_allow       = var.egress_allow
  egress_ports       = var.egress_ports
}
