//! The IAM and STS operations of AWS's models that Berth does not perform,
//! each with the reason. They answer `NotImplemented` (501) naming the
//! reason, never a fake success.

use berth_model::AwsError;

const MFA: &str = "Berth has no multi-factor authentication: neither sign-in nor STS verifies one-time codes, so an MFA device would protect nothing";
const SAML: &str = "Berth cannot verify SAML assertions: their XML signatures need an XML-DSig verifier (exclusive XML canonicalization, RSA-SHA256), and no maintained pure-Rust crate provides one (the xmlsec crate binds the C library libxmlsec1); a SAML provider whose assertions Berth cannot verify would let anyone assume its roles";
const CODECOMMIT: &str = "SSH public keys and service-specific credentials authenticate to AWS CodeCommit, Amazon Keyspaces and Amazon Bedrock, which Berth does not have";
const SIGNING: &str = "X.509 signing certificates authenticate SOAP requests to EC2 and SimpleDB, which Berth does not serve (Berth authenticates with SigV4 access keys)";
const ORGANIZATIONS: &str = "Berth has no AWS Organizations: it serves standalone accounts";
const DELEGATION: &str = "delegation requests come from AWS partner integrations through the console, which Berth does not have";
const BOUNDARIES: &str = "Berth does not evaluate permissions boundaries; accepting one would suggest a limit that is not enforced";
const LAST_ACCESSED: &str = "Berth records when access keys were last used (GetAccessKeyLastUsed) but not which services each identity reached, which these reports list";
const CREDENTIAL_REPORT: &str = "Berth does not generate the credential report (a CSV of every user's credentials and their use)";
const ALIAS: &str =
    "an account alias names the account's console sign-in page, which Berth does not have";
const TEMPLATES: &str =
    "role templates (IAM Role Manager) are an account property feature Berth does not have";
const IDENTITY_CENTER: &str = "trusted identity propagation ties a provider to IAM Identity Center, which Berth does not have; the provider's URL, client IDs and thumbprints are changed with the other OpenID Connect operations";
const OUTBOUND: &str = "Berth does not issue web identity tokens for outside services to trust (outbound web identity federation)";
const SLR_DELETE: &str = "Berth's one service-linked role (AWSServiceRoleForECS) is kept for as long as ECS may use it; delete it with DeleteRole once unused is not offered either, as on AWS";
const SCOPED: &str = "Berth does not narrow existing session credentials in place (GetScopedCredentials); AssumeRole with a session policy gives scoped-down credentials";
const STS_PREFS: &str =
    "Berth's STS has one endpoint; token versions of a global endpoint do not apply";

/// Every operation Berth leaves unimplemented, with why, prefixed by its
/// service (`iam:` or `sts:`).
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("iam:AcceptDelegationRequest", DELEGATION),
    ("iam:AcquireRole", TEMPLATES),
    ("iam:AssociateDelegationRequest", DELEGATION),
    ("iam:CreateAccountAlias", ALIAS),
    ("iam:CreateDelegationRequest", DELEGATION),
    ("iam:CreateSAMLProvider", SAML),
    ("iam:CreateServiceSpecificCredential", CODECOMMIT),
    ("iam:CreateVirtualMFADevice", MFA),
    ("iam:DeactivateMFADevice", MFA),
    ("iam:DeleteAccountAlias", ALIAS),
    ("iam:DeleteRolePermissionsBoundary", BOUNDARIES),
    ("iam:DeleteSAMLProvider", SAML),
    ("iam:DeleteSSHPublicKey", CODECOMMIT),
    ("iam:DeleteServiceLinkedRole", SLR_DELETE),
    ("iam:DeleteServiceSpecificCredential", CODECOMMIT),
    ("iam:DeleteSigningCertificate", SIGNING),
    ("iam:DeleteUserPermissionsBoundary", BOUNDARIES),
    ("iam:DeleteVirtualMFADevice", MFA),
    (
        "iam:DisableOrganizationsRootCredentialsManagement",
        ORGANIZATIONS,
    ),
    ("iam:DisableOrganizationsRootSessions", ORGANIZATIONS),
    ("iam:DisableOutboundWebIdentityFederation", OUTBOUND),
    ("iam:EnableMFADevice", MFA),
    (
        "iam:EnableOrganizationsRootCredentialsManagement",
        ORGANIZATIONS,
    ),
    ("iam:EnableOrganizationsRootSessions", ORGANIZATIONS),
    ("iam:EnableOutboundWebIdentityFederation", OUTBOUND),
    ("iam:GenerateCredentialReport", CREDENTIAL_REPORT),
    ("iam:GenerateOrganizationsAccessReport", ORGANIZATIONS),
    ("iam:GenerateServiceLastAccessedDetails", LAST_ACCESSED),
    ("iam:GetAccountProperties", TEMPLATES),
    (
        "iam:GetAccountSummary",
        "Berth does not keep the account's entity counts and quotas as a summary yet",
    ),
    ("iam:GetCredentialReport", CREDENTIAL_REPORT),
    ("iam:GetDelegationRequest", DELEGATION),
    ("iam:GetHumanReadableSummary", DELEGATION),
    ("iam:GetMFADevice", MFA),
    ("iam:GetOrganizationsAccessReport", ORGANIZATIONS),
    ("iam:GetOutboundWebIdentityFederationInfo", OUTBOUND),
    ("iam:GetRoleTemplateVersion", TEMPLATES),
    ("iam:GetSAMLProvider", SAML),
    ("iam:GetSSHPublicKey", CODECOMMIT),
    ("iam:GetServiceLastAccessedDetails", LAST_ACCESSED),
    (
        "iam:GetServiceLastAccessedDetailsWithEntities",
        LAST_ACCESSED,
    ),
    ("iam:GetServiceLinkedRoleDeletionStatus", SLR_DELETE),
    ("iam:ListAccountAliases", ALIAS),
    ("iam:ListDelegationRequests", DELEGATION),
    ("iam:ListMFADeviceTags", MFA),
    ("iam:ListMFADevices", MFA),
    ("iam:ListOrganizationsFeatures", ORGANIZATIONS),
    ("iam:ListPoliciesGrantingServiceAccess", LAST_ACCESSED),
    ("iam:ListSAMLProviderTags", SAML),
    ("iam:ListSAMLProviders", SAML),
    ("iam:ListSSHPublicKeys", CODECOMMIT),
    ("iam:ListServiceSpecificCredentials", CODECOMMIT),
    ("iam:ListSigningCertificates", SIGNING),
    ("iam:ListVirtualMFADevices", MFA),
    ("iam:PutAccountProperties", TEMPLATES),
    ("iam:PutRolePermissionsBoundary", BOUNDARIES),
    ("iam:PutUserPermissionsBoundary", BOUNDARIES),
    ("iam:RejectDelegationRequest", DELEGATION),
    ("iam:ResetServiceSpecificCredential", CODECOMMIT),
    ("iam:ResyncMFADevice", MFA),
    ("iam:SendDelegationToken", DELEGATION),
    ("iam:SetSecurityTokenServicePreferences", STS_PREFS),
    ("iam:TagMFADevice", MFA),
    ("iam:TagSAMLProvider", SAML),
    ("iam:UntagMFADevice", MFA),
    ("iam:UntagSAMLProvider", SAML),
    ("iam:UpdateDelegationRequest", DELEGATION),
    ("iam:UpdateOpenIDConnectProvider", IDENTITY_CENTER),
    ("iam:UpdateSAMLProvider", SAML),
    ("iam:UpdateSSHPublicKey", CODECOMMIT),
    ("iam:UpdateServiceSpecificCredential", CODECOMMIT),
    ("iam:UpdateSigningCertificate", SIGNING),
    ("iam:UploadSSHPublicKey", CODECOMMIT),
    ("iam:UploadSigningCertificate", SIGNING),
    ("sts:AssumeRoleWithSAML", SAML),
    ("sts:AssumeRoot", ORGANIZATIONS),
    ("sts:GetDelegatedAccessToken", DELEGATION),
    ("sts:GetScopedCredentials", SCOPED),
    ("sts:GetWebIdentityToken", OUTBOUND),
];

/// The answer to an unimplemented `operation` of `service` (`iam`, `sts`),
/// if it is one.
pub(crate) fn reason(service: &str, operation: &str) -> Option<AwsError> {
    let name = format!("{service}:{operation}");
    NOT_IMPLEMENTED
        .iter()
        .find(|(op, _)| *op == name)
        .map(|(_, why)| {
            AwsError::new(
                501,
                "NotImplemented",
                format!("Berth does not implement {operation}: {why}."),
            )
        })
}
