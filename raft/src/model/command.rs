//! Every metadata change is one `Command`, applied by the state machine in log order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::model::tenancy::{CredentialRecord, SigningKeyRecord};

/// The namespace of a repository: its first path segment.
pub fn namespace_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

/// Who may pull from a namespace without credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

/// A manifest as the state machine stores it: the exact bytes plus what was
/// parsed from them at the edge (the node validates JSON before proposing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPut {
    pub repo: String,
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// Tag to move to this digest, if pushed by tag.
    pub tag: Option<String>,
    /// Blobs (config and layers) the manifest references.
    pub blobs: Vec<String>,
    /// Child manifests (for an index) the manifest references.
    pub manifests: Vec<String>,
    /// The `subject` digest, for the referrers API.
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    /// The manifest's `annotations`, JSON-encoded (kept verbatim for referrers).
    pub annotations: Option<String>,
    pub pushed_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `organisation` is None for namespaces only the bootstrap admin
    /// manages; `project` scopes it to one project of the organisation.
    CreateNamespace {
        name: String,
        visibility: Visibility,
        created_at: u64,
        #[serde(default)]
        organisation: Option<String>,
        #[serde(default)]
        project: Option<String>,
    },
    /// Tag patterns that may not move, and the storage quota.
    SetNamespaceLimits {
        name: String,
        immutable_tags: Vec<String>,
        quota_bytes: Option<u64>,
    },
    /// Garbage collection: remove these blobs if, when applied, no
    /// manifest references them and they were committed at or before
    /// `grace_before` (see `gc.rs` for why this is safe).
    CollectBlobs {
        digests: Vec<String>,
        at: u64,
        grace_before: u64,
    },
    /// None removes the namespace's retention policy.
    SetRetentionPolicy {
        namespace: String,
        policy: Option<crate::model::retention::RetentionPolicy>,
    },
    /// Open a retention run (its audit record); the leader then steps it.
    StartRetentionRun(Box<crate::model::retention::RetentionRun>),
    /// Take run `id` through the repository after `reached` (or finish it
    /// when there is none); a no-op unless the run is still at `reached`.
    RetentionStep {
        namespace: String,
        id: String,
        reached: Option<String>,
        at: u64,
    },
    /// Last pulls seen by one node since its previous flush:
    /// (repository, tag or digest, milliseconds since the epoch).
    RecordPulls {
        pulls: Vec<(String, String, u64)>,
    },
    /// The leader's periodic metering tick (seconds since the epoch).
    MeterTick {
        at: u64,
    },
    /// Refused while the namespace holds repositories.
    DeleteNamespace {
        name: String,
    },
    /// Every tag, manifest and blob link of one repository.
    DeleteRepository {
        repo: String,
    },
    CreateOrganisation {
        name: String,
        features: BTreeMap<String, bool>,
        created_at: u64,
    },
    /// Refused while the organisation owns namespaces; its projects and
    /// credentials go with it.
    DeleteOrganisation {
        name: String,
    },
    SetFeature {
        organisation: String,
        feature: String,
        enabled: bool,
    },
    CreateProject {
        organisation: String,
        name: String,
        created_at: u64,
    },
    /// Refused while namespaces are scoped to the project.
    DeleteProject {
        organisation: String,
        name: String,
    },
    /// The secret is hashed by the node that took the request; only the
    /// hash is proposed.
    CreateCredential(Box<CredentialRecord>),
    RevokeCredential {
        id: String,
        revoked_at: u64,
    },
    /// A new token signing key; keys still active stop signing now and stop
    /// verifying at `retire_others_at` (after the longest token lifetime).
    AddSigningKey {
        key: SigningKeyRecord,
        retire_others_at: u64,
    },
    SetNamespaceVisibility {
        name: String,
        visibility: Visibility,
    },
    /// A blob whose bytes are durably stored: record it and link it to `repo`.
    CommitBlob {
        repo: String,
        digest: String,
        size: u64,
        created_at: u64,
    },
    /// Cross-repository mount: link an already committed blob to `repo`.
    MountBlob {
        repo: String,
        from: String,
        digest: String,
        created_at: u64,
    },
    UnlinkBlob {
        repo: String,
        digest: String,
    },
    PutManifest(Box<ManifestPut>),
    DeleteManifest {
        repo: String,
        digest: String,
    },
    DeleteTag {
        repo: String,
        tag: String,
    },
    /// Storage settings that override the nodes' flags cluster-wide.
    SetStorageSettings {
        /// Bandwidth of repair and rebalance pulls per node (0: no limit).
        rebalance_bytes_per_sec: Option<u64>,
        /// Garbage collection grace period.
        gc_grace_secs: Option<u64>,
        /// Seconds between scheduled retention runs (0: only on demand).
        #[serde(default)]
        retention_interval_secs: Option<u64>,
    },
    /// How many nodes hold each blob (validated against the voters at the
    /// edge; placement caps it at the number of members anyway).
    SetReplicationFactor {
        factor: u32,
    },
    /// Request rate limits: the cluster's default (`organisation: None`) or
    /// one organisation's override; `limits: None` removes it.
    SetRateLimits {
        organisation: Option<String>,
        limits: Option<RateLimits>,
    },
    /// A command and who proposed it: the state machine applies `command`
    /// and records its audit events with this context (see `audit`).
    Audited {
        context: crate::model::audit::AuditContext,
        command: Box<Command>,
    },
    /// Forget audit events from before `before_ms` (the leader proposes it
    /// under its `--audit-retention`).
    PruneAudit {
        before_ms: u64,
    },
    /// A console session signed out at `at` (seconds): every node refuses
    /// its tokens from now on, which would otherwise verify until `until`.
    EndSession {
        id: String,
        at: u64,
        until: u64,
    },
}

/// Requests allowed per minute to one credential (to one client address
/// for anonymous callers), by kind; 0: no limit. A pull is a manifest GET
/// (as Docker Hub counts them), a push an upload opened or a manifest put
/// or deleted, and a management call any `/v1` request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default)]
    pub pulls_per_minute: u32,
    #[serde(default)]
    pub pushes_per_minute: u32,
    #[serde(default)]
    pub management_per_minute: u32,
}

/// A command as proposed to the log. `request` names the client request
/// that proposed it: a node that lost track of a forwarded proposal (a
/// timeout, a leader change) proposes it again with the same id, and the
/// state machine applies it once and answers the retry with the first
/// result. Without it, a retried tag move could land after a newer write
/// and undo it. 0 means no id (no deduplication).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub request: u128,
    pub command: Command,
}

impl From<Command> for Proposal {
    fn from(command: Command) -> Self {
        Proposal {
            request: 0,
            command,
        }
    }
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateNamespace { .. } => "create_namespace",
            Command::SetNamespaceVisibility { .. } => "set_namespace_visibility",
            Command::CommitBlob { .. } => "commit_blob",
            Command::MountBlob { .. } => "mount_blob",
            Command::UnlinkBlob { .. } => "unlink_blob",
            Command::PutManifest(_) => "put_manifest",
            Command::DeleteManifest { .. } => "delete_manifest",
            Command::DeleteTag { .. } => "delete_tag",
            Command::SetReplicationFactor { .. } => "set_replication_factor",
            Command::DeleteNamespace { .. } => "delete_namespace",
            Command::SetNamespaceLimits { .. } => "set_namespace_limits",
            Command::MeterTick { .. } => "meter_tick",
            Command::SetRetentionPolicy { .. } => "set_retention_policy",
            Command::StartRetentionRun(_) => "start_retention_run",
            Command::RetentionStep { .. } => "retention_step",
            Command::RecordPulls { .. } => "record_pulls",
            Command::SetStorageSettings { .. } => "set_storage_settings",
            Command::CollectBlobs { .. } => "collect_blobs",
            Command::DeleteRepository { .. } => "delete_repository",
            Command::CreateOrganisation { .. } => "create_organisation",
            Command::DeleteOrganisation { .. } => "delete_organisation",
            Command::SetFeature { .. } => "set_feature",
            Command::CreateProject { .. } => "create_project",
            Command::DeleteProject { .. } => "delete_project",
            Command::CreateCredential(_) => "create_credential",
            Command::RevokeCredential { .. } => "revoke_credential",
            Command::AddSigningKey { .. } => "add_signing_key",
            Command::SetRateLimits { .. } => "set_rate_limits",
            Command::Audited { command, .. } => command.kind(),
            Command::PruneAudit { .. } => "prune_audit",
            Command::EndSession { .. } => "end_session",
        }
    }

    /// Whether a node proposes this command with its audit context. Blob
    /// commits are parts of a push (its manifest is the event), pull times
    /// and metering are bookkeeping, and pruning the trail is not an act on
    /// anything a user owns.
    pub fn is_audited(&self) -> bool {
        !matches!(
            self,
            Command::CommitBlob { .. }
                | Command::MountBlob { .. }
                | Command::RecordPulls { .. }
                | Command::MeterTick { .. }
                | Command::PruneAudit { .. }
                | Command::EndSession { .. }
                | Command::Audited { .. }
        )
    }

    /// The command inside any `Audited` wrappers, and the outermost context.
    pub fn unwrap_audited(&self) -> (&Command, Option<&crate::model::audit::AuditContext>) {
        let mut cmd = self;
        let mut context = None;
        while let Command::Audited {
            context: c,
            command,
        } = cmd
        {
            context = context.or(Some(c));
            cmd = command;
        }
        (cmd, context)
    }
}

/// Why the state machine refused a command. Refusals are deterministic: every
/// replica refuses the same command the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("namespace '{0}' does not exist")]
    NamespaceUnknown(String),
    #[error("namespace '{0}' already exists")]
    NamespaceExists(String),
    #[error("repository '{0}' is not known")]
    RepositoryUnknown(String),
    #[error("blob {digest} is not known in repository '{repo}'")]
    BlobUnknown { repo: String, digest: String },
    #[error("manifest {digest} is not known in repository '{repo}'")]
    ManifestUnknown { repo: String, digest: String },
    #[error("tag '{tag}' is not known in repository '{repo}'")]
    TagUnknown { repo: String, tag: String },
    #[error("namespace '{0}' still holds repositories; delete them first")]
    NamespaceNotEmpty(String),
    #[error("organisation '{0}' does not exist")]
    OrganisationUnknown(String),
    #[error("organisation '{0}' already exists")]
    OrganisationExists(String),
    #[error("organisation '{0}' still owns namespaces; delete them first")]
    OrganisationNotEmpty(String),
    #[error("project '{project}' does not exist in organisation '{organisation}'")]
    ProjectUnknown {
        organisation: String,
        project: String,
    },
    #[error("project '{project}' already exists in organisation '{organisation}'")]
    ProjectExists {
        organisation: String,
        project: String,
    },
    #[error("project '{project}' of organisation '{organisation}' still has namespaces")]
    ProjectNotEmpty {
        organisation: String,
        project: String,
    },
    #[error("a credential named '{name}' already exists in organisation '{organisation}'")]
    CredentialExists { organisation: String, name: String },
    #[error("namespace '{0}' has no retention policy")]
    NoRetentionPolicy(String),
    #[error("credential '{0}' does not exist")]
    CredentialUnknown(String),
    #[error(
        "namespace '{namespace}' is over its storage quota: {usage} bytes stored, \
         {needed} more would exceed the quota of {quota} bytes"
    )]
    QuotaExceeded {
        namespace: String,
        usage: u64,
        quota: u64,
        needed: u64,
    },
    #[error(
        "tag '{tag}' of '{repo}' is immutable (pattern '{pattern}'): it cannot be moved or deleted"
    )]
    TagImmutable {
        repo: String,
        tag: String,
        pattern: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    #[default]
    Ok,
    Refused(Refusal),
}

impl CommandResult {
    pub fn into_result(self) -> Result<(), Refusal> {
        match self {
            CommandResult::Ok => Ok(()),
            CommandResult::Refused(r) => Err(r),
        }
    }
}
