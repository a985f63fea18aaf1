"""Names defined once: events, tags, decisions, defaults."""

from __future__ import annotations

from typing import Final

IAM_EVENT_SOURCE: Final = "iam.amazonaws.com"
CLOUDTRAIL_DETAIL_TYPE: Final = "AWS API Call via CloudTrail"
EVENTBRIDGE_SOURCE: Final = "aws.iam"

CREATE_USER: Final = "CreateUser"
CREATE_ACCESS_KEY: Final = "CreateAccessKey"
CREATE_LOGIN_PROFILE: Final = "CreateLoginProfile"
UPDATE_LOGIN_PROFILE: Final = "UpdateLoginProfile"
UPLOAD_SSH_PUBLIC_KEY: Final = "UploadSSHPublicKey"
CREATE_SERVICE_SPECIFIC_CREDENTIAL: Final = "CreateServiceSpecificCredential"
UPLOAD_SIGNING_CERTIFICATE: Final = "UploadSigningCertificate"
UPDATE_USER: Final = "UpdateUser"
DELETE_USER: Final = "DeleteUser"

DETACH_USER_POLICY: Final = "DetachUserPolicy"
UPDATE_ACCESS_KEY: Final = "UpdateAccessKey"
UPDATE_SSH_PUBLIC_KEY: Final = "UpdateSSHPublicKey"
UPDATE_SERVICE_SPECIFIC_CREDENTIAL: Final = "UpdateServiceSpecificCredential"
UPDATE_SIGNING_CERTIFICATE: Final = "UpdateSigningCertificate"
TAG_USER_EVENT: Final = "TagUser"
UNTAG_USER_EVENT: Final = "UntagUser"

# Long-lived credential kinds (DESIGN.md threat model): one rule, table-driven (policy.CREDENTIALS).
ACCESS_KEY: Final = "access_key"
LOGIN_PROFILE: Final = "login_profile"
SSH_PUBLIC_KEY: Final = "ssh_public_key"
SERVICE_SPECIFIC_CREDENTIAL: Final = "service_specific_credential"
SIGNING_CERTIFICATE: Final = "signing_certificate"

#: The events that make a long-lived credential, and the kind each makes.
CREDENTIAL_EVENTS: Final = {
    CREATE_ACCESS_KEY: ACCESS_KEY,
    CREATE_LOGIN_PROFILE: LOGIN_PROFILE,
    UPDATE_LOGIN_PROFILE: LOGIN_PROFILE,
    UPLOAD_SSH_PUBLIC_KEY: SSH_PUBLIC_KEY,
    CREATE_SERVICE_SPECIFIC_CREDENTIAL: SERVICE_SPECIFIC_CREDENTIAL,
    UPLOAD_SIGNING_CERTIFICATE: SIGNING_CERTIFICATE,
}
#: The events that set a credential's status (Active/Inactive), and the kind each touches.
CREDENTIAL_STATUS_EVENTS: Final = {
    UPDATE_ACCESS_KEY: ACCESS_KEY,
    UPDATE_SSH_PUBLIC_KEY: SSH_PUBLIC_KEY,
    UPDATE_SERVICE_SPECIFIC_CREDENTIAL: SERVICE_SPECIFIC_CREDENTIAL,
    UPDATE_SIGNING_CERTIFICATE: SIGNING_CERTIFICATE,
}
#: The events that create an IAM user or one of its credentials.
CREATION_EVENTS: Final = frozenset({CREATE_USER, *CREDENTIAL_EVENTS})
#: The events that move or end a user (its record and exception follow the user id).
LIFECYCLE_EVENTS: Final = frozenset({UPDATE_USER, DELETE_USER})
#: The events that can undo the guardrail's work (reverted unless made by the guardrail itself).
TAMPER_EVENTS: Final = frozenset({DETACH_USER_POLICY, TAG_USER_EVENT, UNTAG_USER_EVENT, *CREDENTIAL_STATUS_EVENTS})
CREATE_POLICY_VERSION: Final = "CreatePolicyVersion"
SET_DEFAULT_POLICY_VERSION: Final = "SetDefaultPolicyVersion"
DELETE_POLICY_VERSION: Final = "DeletePolicyVersion"
CREATE_POLICY: Final = "CreatePolicy"
DELETE_POLICY: Final = "DeletePolicy"
PUT_ROLE_POLICY: Final = "PutRolePolicy"
ATTACH_ROLE_POLICY: Final = "AttachRolePolicy"
DETACH_ROLE_POLICY: Final = "DetachRolePolicy"
DELETE_ROLE_POLICY: Final = "DeleteRolePolicy"
UPDATE_ASSUME_ROLE_POLICY: Final = "UpdateAssumeRolePolicy"
PUT_ROLE_PERMISSIONS_BOUNDARY: Final = "PutRolePermissionsBoundary"
DELETE_ROLE_PERMISSIONS_BOUNDARY: Final = "DeleteRolePermissionsBoundary"

#: The events that can change the quarantine policy's default document: its versions, and deleting
#: it to create another of the same name (the same ARN) with another document.
POLICY_VERSION_EVENTS: Final = frozenset(
    {CREATE_POLICY_VERSION, SET_DEFAULT_POLICY_VERSION, DELETE_POLICY_VERSION, CREATE_POLICY, DELETE_POLICY}
)
#: The events that change what a role may do or who may assume it (watched on the guardrail's roles).
ROLE_POLICY_EVENTS: Final = frozenset(
    {
        PUT_ROLE_POLICY,
        ATTACH_ROLE_POLICY,
        DETACH_ROLE_POLICY,
        DELETE_ROLE_POLICY,
        UPDATE_ASSUME_ROLE_POLICY,
        # a boundary caps what the role may do: a deny-all boundary silences the guardrail there
        PUT_ROLE_PERMISSIONS_BOUNDARY,
        DELETE_ROLE_PERMISSIONS_BOUNDARY,
    }
)
#: The events that change the guardrail's own parts (its quarantine policy, its roles).
OWN_PART_EVENTS: Final = POLICY_VERSION_EVENTS | ROLE_POLICY_EVENTS
#: Everything the EventBridge rule subscribes to.
SUBSCRIBED_EVENTS: Final = CREATION_EVENTS | LIFECYCLE_EVENTS | TAMPER_EVENTS | OWN_PART_EVENTS

# Decisions (the verdict of the policy engine).
APPROVE: Final = "approve"
QUARANTINE: Final = "quarantine"
ALERT: Final = "alert"
IGNORE: Final = "ignore"
DECISIONS: Final = (APPROVE, QUARANTINE, ALERT, IGNORE)

# Severities, in increasing order.
INFO: Final = "info"
HIGH: Final = "high"
CRITICAL: Final = "critical"

ENFORCE: Final = "enforce"
MONITOR: Final = "monitor"
MODES: Final = frozenset({ENFORCE, MONITOR})

# Tags the guardrail owns.
TAG_PREFIX: Final = "guardrail:"
TAG_STATUS: Final = "guardrail:status"
TAG_INTEGRATION: Final = "guardrail:integration"
TAG_OWNER: Final = "guardrail:owner"
TAG_PURPOSE: Final = "guardrail:purpose"
TAG_SERVICES: Final = "guardrail:services"
TAG_RESOURCES: Final = "guardrail:resources"
TAG_USED_FROM: Final = "guardrail:used-from"
TAG_TICKET: Final = "guardrail:ticket"
TAG_REASON: Final = "guardrail:reason"
TAG_EVENT_ID: Final = "guardrail:event-id"
TAG_APPROVED_BY: Final = "guardrail:approved-by"
TAG_EXCEPTION_EXPIRES: Final = "guardrail:exception-expires"

STATUS_APPROVED: Final = "approved"
STATUS_QUARANTINED: Final = "quarantined"
STATUS_EXCEPTION: Final = "exception"
STATUS_MONITORED: Final = "monitored"
#: A user record closed by DeleteUser (kept for the audit; a re-created name starts afresh).
STATUS_DELETED: Final = "deleted"

# Settings defaults.
DEFAULT_QUARANTINE_POLICY_NAME: Final = "iam-user-guardrail-quarantine"
DEFAULT_TABLE_NAME: Final = "iam-user-guardrail"
DEFAULT_REMEDIATION_ROLE: Final = "GuardrailRemediationRole"
DEFAULT_MAX_ACCESS_KEYS: Final = 1
DEFAULT_REMEDIATION_ROLE: Final = "GuardrailRemediationRole"
#: The RoleSessionName the guardrail uses when it assumes a member account's remediation role.
REMEDIATION_SESSION_NAME: Final = "iam-user-guardrail"
#: How long a processed event id is remembered (DynamoDB TTL).
EVENT_RECORD_TTL_DAYS: Final = 90

# Slack interactive action ids (the buttons the alert carries).
ACTION_APPROVE_PREFIX: Final = "guardrail_approve_"
ACTION_KEEP_QUARANTINED: Final = "guardrail_keep_quarantined"
APPROVE_BUTTON_DAYS: Final = (7, 30)

#: The quarantine policy document: deny everything.
QUARANTINE_POLICY_DOCUMENT: Final = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "IamUserGuardrailQuarantine",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
        }
    ],
}

# Organization scale (issue 10): discovery, fan-out, silence detection, bursts.
APP_NAME: Final = "iam-user-guardrail"
#: The EventBridge rule infra/member-account.yaml creates in every member account.
FORWARD_RULE_NAME: Final = "iam-user-guardrail-forward"
EVENTS_EVENT_SOURCE: Final = "events.amazonaws.com"
EVENTS_SOURCE: Final = "aws.events"
#: The sweep tags the member's quarantine policy; the TagPolicy event proves the account is not silent.
TAG_POLICY_EVENT: Final = "TagPolicy"
TAG_HEARTBEAT: Final = "guardrail:heartbeat"
#: Calls that silence an account's forwarding (or the guardrail's own rules): alerted when seen.
RULE_TAMPER_EVENTS: Final = frozenset({"DisableRule", "DeleteRule", "RemoveTargets"})
#: Everything the EventBridge rules (home and member) forward to on_iam_event.
FORWARDED_EVENTS: Final = SUBSCRIBED_EVENTS | {TAG_POLICY_EVENT} | RULE_TAMPER_EVENTS
#: The user column of a sweep row about an account rather than a user.
ACCOUNT_ROW: Final = "(account)"
#: Beyond this many alerts from one creator within the window, alerts are rolled up.
BURST_LIMIT: Final = 5
BURST_WINDOW_MINUTES: Final = 10
#: At most this many sweep workers run at once (the SQS event source's maximum concurrency).
SWEEP_WORKER_CONCURRENCY: Final = 50
