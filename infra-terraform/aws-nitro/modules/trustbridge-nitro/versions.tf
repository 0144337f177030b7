terraform {
  # 1.5 for `check` blocks.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # aws_vpc_security_group_{ingress,egress}_rule and enclave_options.
      version = ">= 5.0, < 7.0"
    }
  }
}
