"""iam-user-guardrail: no IAM users except approved third-party integrations."""
