//! Every metadata change is one `Command`, applied by the state machine in log order.

use serde::{Deserialize, Serialize};

/// Who may pull from a namespace without credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    CreateNamespace {
        name: String,
        visibility: Visibility,
        created_at: u64,
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
    /// How many nodes hold each blob (validated against the voters at the
    /// edge; placement caps it at the number of members anyway).
    SetReplicationFactor {
        factor: u32,
    },
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
        }
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
