output "relay_url" {
  description = "The relay's public URL: trustbridge proxy --relay URL."
  value       = module.trustbridge.relay_url
}

output "instance_id" {
  description = "The parent instance (aws ssm start-session --target ID)."
  value       = module.trustbridge.instance_id
}

output "kms_key_arn" {
  description = "ARN of the attested KMS key."
  value       = module.trustbridge.kms_key_arn
}

output "bundle_bucket" {
  description = "Bucket to upload the sealed bundle, the EIF and tb-relay to."
  value       = module.trustbridge.bundle_bucket
}

output "bundle_source" {
  description = "Where the relay mirrors the sealed bundle from."
  value       = module.trustbridge.bundle_source
}
