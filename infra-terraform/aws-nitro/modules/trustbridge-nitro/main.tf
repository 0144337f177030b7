# TrustBridge on AWS Nitro Enclaves: a parent EC2 instance with enclaves enabled that runs
# tb-relay (untrusted) and the sentinel's EIF in an enclave, a KMS key whose policy lets
# only that enclave decrypt, and a private bucket for the sealed bundle.
#
# Ports. Clients reach tb-relay's ingress on var.relay_port (8443 by default); that is the
# only ingress. The relay talks to the enclave over vsock (sentinel vsock://16:8000; the
# relay's egress and bundle listeners on vsock ports 8001 and 8002), which never leaves the
# instance, and the enclave has no network of its own. There is no SSH: operators use SSM
# Session Manager.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

data "aws_ssm_parameter" "ami" {
  name = var.ami_ssm_parameter
}

locals {
  tags = merge({ "trustbridge:deployment" = var.name_prefix }, var.tags)

  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id

  # The principal the compiled key policy must name (--enclave-role-arn).
  enclave_role_arn = "arn:${local.partition}:iam::${local.account_id}:role/${var.instance_role_name}"

  # The key policy's statements that let a principal decrypt: the same rule as the
  # variable's validation, which guarantees each carries an attestation condition.
  key_policy_statements = flatten([try(jsondecode(var.key_policy_json).Statement, [])])
  decrypt_statements = [
    for s in local.key_policy_statements : s
    if try(s.Effect, "") == "Allow" && (
      try(s.NotAction, null) != null
      || try(s.NotPrincipal, null) != null
      || anytrue([
        for a in flatten([try(s.Action, [])]) : anytrue([
          for wanted in ["kms:decrypt", "kms:reencryptfrom"] :
          can(regex("^${replace(replace(lower(a), "*", ".*"), "?", ".")}$", wanted))
        ])
      ])
    )
  ]
  decrypt_principals = distinct(flatten([
    for s in local.decrypt_statements : [try(s.Principal.AWS, "*")]
  ]))

  bundle_prefix = trim(var.bundle_prefix, "/")
  egress_rules = {
    for pair in setproduct(var.egress_cidrs, var.egress_ports) :
    "${pair[0]}:${pair[1]}" => { cidr = pair[0], port = pair[1] }
  }
}

# --- Identity -------------------------------------------------------------------------

resource "aws_iam_role" "enclave" {
  name        = var.instance_role_name
  description = "TrustBridge parent instance; the KMS key policy lets it decrypt only from an attested enclave."
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.${data.aws_partition.current.dns_suffix}" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_instance_profile" "enclave" {
  name = var.instance_role_name
  role = aws_iam_role.enclave.name
  tags = local.tags
}

# Session Manager instead of SSH: no inbound port, access logged in CloudTrail.
resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.enclave.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

# The relay mirrors the sealed bundle and the user data fetches the EIF and the relay
# binary: read-only, this bucket only.
resource "aws_iam_role_policy" "bundle_read" {
  name = "${var.name_prefix}-bundle-read"
  role = aws_iam_role.enclave.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ListBundleBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = aws_s3_bucket.bundles.arn
      },
      {
        Sid      = "ReadBundleObjects"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = "${aws_s3_bucket.bundles.arn}/*"
      },
    ]
  })
}

# --- The attested key -----------------------------------------------------------------

resource "aws_kms_key" "model" {
  description             = "TrustBridge model key: decrypt only from an attested Nitro enclave (${var.name_prefix})"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  # The output of `trustbridge policy compile --target aws-kms`, validated in variables.tf.
  policy = var.key_policy_json
  tags   = local.tags

  # KMS refuses a policy that names a principal which does not exist yet.
  depends_on = [aws_iam_role.enclave]

  lifecycle {
    precondition {
      condition     = length(local.decrypt_statements) > 0
      error_message = "key_policy_json grants no decryption at all: the enclave could never obtain the key."
    }
    precondition {
      condition     = alltrue([for p in local.decrypt_principals : p == local.enclave_role_arn])
      error_message = "key_policy_json lets another principal than ${local.enclave_role_arn} decrypt: compile it with --enclave-role-arn ${local.enclave_role_arn}."
    }
  }
}

resource "aws_kms_alias" "model" {
  name          = "alias/${var.name_prefix}-model"
  target_key_id = aws_kms_key.model.key_id
}

# --- Bundle storage -------------------------------------------------------------------

resource "aws_s3_bucket" "bundles" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is the operator's choice; the bundle is sealed ciphertext that the provider can re-upload.
  #checkov:skip=CKV2_AWS_62:No consumer needs event notifications; the relay mirrors the bundle once at start.
  #checkov:skip=CKV_AWS_145:Objects are sealed (AES-256-GCM under the model's data key) before upload; SSE-S3 adds encryption at rest without giving the attested KMS key any S3 grant.
  #checkov:skip=CKV_AWS_18:Access logging is optional (var.access_log_bucket); it needs a log bucket outside this module.
  bucket        = var.bundle_bucket_name
  bucket_prefix = var.bundle_bucket_name == null ? "${var.name_prefix}-bundles-" : null
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "bundles" {
  bucket                  = aws_s3_bucket.bundles.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "bundles" {
  bucket = aws_s3_bucket.bundles.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "bundles" {
  bucket = aws_s3_bucket.bundles.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "bundles" {
  bucket = aws_s3_bucket.bundles.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "bundles" {
  bucket = aws_s3_bucket.bundles.id

  rule {
    id     = "tidy"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
  }

  depends_on = [aws_s3_bucket_versioning.bundles]
}

resource "aws_s3_bucket_logging" "bundles" {
  count         = var.access_log_bucket == null ? 0 : 1
  bucket        = aws_s3_bucket.bundles.id
  target_bucket = var.access_log_bucket
  target_prefix = "${var.name_prefix}-bundles/"
}

# TLS only.
resource "aws_s3_bucket_policy" "bundles" {
  bucket = aws_s3_bucket.bundles.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.bundles.arn, "${aws_s3_bucket.bundles.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  depends_on = [aws_s3_bucket_public_access_block.bundles]
}

# --- Network --------------------------------------------------------------------------

resource "aws_security_group" "relay" {
  name        = "${var.name_prefix}-relay"
  description = "TrustBridge relay: the relay's public port in; HTTPS and the broker out. No SSH."
  vpc_id      = var.vpc_id
  tags        = local.tags
}

# The only ingress: the relay's public port. The runtime (8081) and the sentinel's ports
# (vsock 8000 to 8002) are never opened; var.relay_port's validation refuses them.
resource "aws_vpc_security_group_ingress_rule" "relay" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.relay.id
  description       = "TrustBridge relay ingress (OHTTP, attestation bundle, receipts)"
  ip_protocol       = "tcp"
  from_port         = var.relay_port
  to_port           = var.relay_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "out" {
  for_each          = local.egress_rules
  security_group_id = aws_security_group.relay.id
  description       = "TrustBridge parent instance egress (AWS APIs, packages, key broker)"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
  tags              = local.tags
}

# --- The parent instance --------------------------------------------------------------

resource "aws_instance" "parent" {
  #checkov:skip=CKV_AWS_88:The relay is the service's public ingress (var.associate_public_ip); it forwards ciphertext only and the security group opens its port alone.
  ami                         = data.aws_ssm_parameter.ami.value
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.relay.id]
  iam_instance_profile        = aws_iam_instance_profile.enclave.name
  associate_public_ip_address = var.associate_public_ip
  monitoring                  = true
  ebs_optimized               = true

  enclave_options {
    enabled = true
  }

  # IMDSv2 only, one hop: the enclave cannot reach the instance metadata at all.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted             = true
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gib
    delete_on_termination = true
  }

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    region             = data.aws_region.current.name
    bucket             = aws_s3_bucket.bundles.id
    bundle_prefix      = local.bundle_prefix
    eif_object_key     = var.eif_object_key
    eif_sha256         = var.eif_sha256
    relay_object_key   = var.relay_object_key
    relay_sha256       = var.relay_sha256
    relay_port         = var.relay_port
    egress_allow       = join(",", var.egress_allow)
    enclave_cpu_count  = var.enclave_cpu_count
    enclave_memory_mib = var.enclave_memory_mib
    enclave_cid        = var.enclave_cid
  })
  user_data_replace_on_change = true

  tags = merge(local.tags, { Name = "${var.name_prefix}-parent" })

  depends_on = [aws_iam_role_policy.bundle_read, aws_iam_role_policy_attachment.ssm]
}

# Warns (does not fail) when the KMS key's administrator is not whoever runs Terraform:
# KMS refuses a policy that would lock the creator out, so apply would fail later.
data "aws_iam_session_context" "current" {
  arn = data.aws_caller_identity.current.arn
}

check "key_admin_is_the_deployer" {
  assert {
    condition = contains(
      flatten([for s in local.key_policy_statements : [try(s.Principal.AWS, "")] if try(s.Effect, "") == "Allow"]),
      data.aws_iam_session_context.current.issuer_arn,
    )
    error_message = "key_policy_json names no statement for ${data.aws_iam_session_context.current.issuer_arn}, which runs Terraform: KMS refuses a key policy that locks its creator out. Compile with --key-admin-arn ${data.aws_iam_session_context.current.issuer_arn} (or deploy as the key administrator)."
  }
}
