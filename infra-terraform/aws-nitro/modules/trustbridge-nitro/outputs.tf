output "instance_id" {
  description = "ID of the parent EC2 instance (for SSM Session Manager: aws ssm start-session --target ID)."
  value       = aws_instance.parent.id
}

output "public_ip" {
  description = "Public IPv4 address of the parent instance (empty without associate_public_ip)."
  value       = aws_instance.parent.public_ip
}

output "relay_url" {
  description = "The relay's public URL, for `trustbridge proxy --relay` and `tb-verify log` (plain HTTP: OHTTP encrypts every request end to end)."
  value       = "http://${coalesce(aws_instance.parent.public_ip, aws_instance.parent.private_ip)}:${var.relay_port}"
}

output "relay_port" {
  description = "The relay's public port, the only port the security group opens."
  value       = var.relay_port
}

output "security_group_id" {
  description = "ID of the parent instance's security group."
  value       = aws_security_group.relay.id
}

output "enclave_role_arn" {
  description = "ARN of the parent instance's IAM role: the --enclave-role-arn the key policy was compiled for."
  value       = aws_iam_role.enclave.arn
}

output "kms_key_arn" {
  description = "ARN of the attested KMS key (decrypt only from an enclave whose PCRs the policy lists)."
  value       = aws_kms_key.model.arn
}

output "kms_key_alias" {
  description = "Alias of the attested KMS key."
  value       = aws_kms_alias.model.name
}

output "bundle_bucket" {
  description = "Name of the private bucket for the sealed bundle, the EIF and the relay binary."
  value       = aws_s3_bucket.bundles.id
}

output "bundle_source" {
  description = "Where the relay mirrors the sealed bundle from (tb-relay --bundle-source)."
  value       = "s3://${aws_s3_bucket.bundles.id}/${local.bundle_prefix}"
}
