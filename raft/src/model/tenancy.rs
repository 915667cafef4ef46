//! Tenancy records: organisations, projects, credentials and the token
//! signing keys, and how the state machine applies their commands.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::apply::{ApplyError, Staged};
use crate::model::command::{Command, Refusal};
use crate::store::{
    cf, encode, key2, NamespaceRecord, CF_CREDENTIALS, CF_CREDENTIALS_BY_ORG, CF_NAMESPACES,
    CF_ORGS, CF_PROJECTS, CF_SIGNING_KEYS,
};

/// The feature gate that lets an organisation use the registry at all.
pub const FEATURE_CONTAINER_REGISTRY: &str = "containerRegistry";

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Manage the organisation's namespaces, projects and credentials.
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What a credential may do in one namespace of its organisation, or in
/// every namespace it can see (`namespace = "*"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scope {
    pub namespace: String,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganisationRecord {
    pub name: String,
    pub features: BTreeMap<String, bool>,
    pub created_at: u64,
}

impl OrganisationRecord {
    pub fn registry_enabled(&self) -> bool {
        self.features
            .get(FEATURE_CONTAINER_REGISTRY)
            .copied()
            .unwrap_or(false)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub organisation: String,
    pub name: String,
    pub created_at: u64,
}

/// A robot account / API token. The secret itself is never stored: only
/// its argon2 hash (PHC string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub id: String,
    pub organisation: String,
    pub project: Option<String>,
    pub name: String,
    pub secret_hash: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub created_at: u64,
}

impl CredentialRecord {
    /// Whether the credential may be used at `now` (seconds).
    pub fn usable_at(&self, now: u64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    /// Whether it may see namespace `ns` at all: same organisation, and a
    /// project-scoped namespace only for credentials of that project.
    pub fn sees(&self, ns: &NamespaceRecord) -> bool {
        ns.organisation.as_deref() == Some(self.organisation.as_str())
            && ns
                .project
                .as_ref()
                .is_none_or(|p| self.project.as_ref() == Some(p))
    }

    /// The actions its scopes grant on namespace `ns` (which it must see).
    pub fn actions_on(&self, ns: &NamespaceRecord) -> Vec<Action> {
        if !self.sees(ns) {
            return Vec::new();
        }
        let mut out: Vec<Action> = self
            .scopes
            .iter()
            .filter(|s| s.namespace == "*" || s.namespace == ns.name)
            .flat_map(|s| s.actions.iter().copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// An organisation administrator: admin on every namespace, and not
    /// confined to a project.
    pub fn is_org_admin(&self) -> bool {
        self.project.is_none()
            && self
                .scopes
                .iter()
                .any(|s| s.namespace == "*" && s.actions.contains(&Action::Admin))
    }
}

/// A token signing key (Ed25519, PEM). Every node signs and verifies with
/// the keys in the replicated state, so a token from one node is good at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    pub created_at: u64,
    /// When set: no longer signs, and verifies tokens until this time.
    pub retire_at: Option<u64>,
}

impl Staged<'_> {
    /// The tenancy commands (the state machine's `apply` sends only these).
    pub(crate) fn apply_tenancy(
        &mut self,
        cmd: &Command,
    ) -> Result<Result<(), Refusal>, ApplyError> {
        let r = match cmd {
            Command::CreateOrganisation {
                name,
                features,
                created_at,
            } => {
                if self.reader.organisation(name)?.is_some() {
                    Err(Refusal::OrganisationExists(name.clone()))
                } else {
                    let rec = OrganisationRecord {
                        name: name.clone(),
                        features: features.clone(),
                        created_at: *created_at,
                    };
                    self.batch.put_cf(cf(self.db, CF_ORGS), name, encode(&rec));
                    Ok(())
                }
            }
            Command::SetFeature {
                organisation,
                feature,
                enabled,
            } => match self.reader.organisation(organisation)? {
                None => Err(Refusal::OrganisationUnknown(organisation.clone())),
                Some(mut rec) => {
                    rec.features.insert(feature.clone(), *enabled);
                    self.batch
                        .put_cf(cf(self.db, CF_ORGS), organisation, encode(&rec));
                    Ok(())
                }
            },
            Command::DeleteOrganisation { name } => self.delete_organisation(name)?,
            Command::CreateProject {
                organisation,
                name,
                created_at,
            } => {
                if self.reader.organisation(organisation)?.is_none() {
                    Err(Refusal::OrganisationUnknown(organisation.clone()))
                } else if self.reader.project(organisation, name)?.is_some() {
                    Err(Refusal::ProjectExists {
                        organisation: organisation.clone(),
                        project: name.clone(),
                    })
                } else {
                    let rec = ProjectRecord {
                        organisation: organisation.clone(),
                        name: name.clone(),
                        created_at: *created_at,
                    };
                    self.batch.put_cf(
                        cf(self.db, CF_PROJECTS),
                        key2(organisation, name),
                        encode(&rec),
                    );
                    Ok(())
                }
            }
            Command::DeleteProject { organisation, name } => {
                if self.reader.project(organisation, name)?.is_none() {
                    Err(Refusal::ProjectUnknown {
                        organisation: organisation.clone(),
                        project: name.clone(),
                    })
                } else if self.reader.all_namespaces()?.iter().any(|n| {
                    n.organisation.as_ref() == Some(organisation)
                        && n.project.as_ref() == Some(name)
                }) {
                    Err(Refusal::ProjectNotEmpty {
                        organisation: organisation.clone(),
                        project: name.clone(),
                    })
                } else {
                    // The project's credentials go with it.
                    for c in self.reader.credentials(organisation)? {
                        if c.project.as_ref() == Some(name) {
                            self.delete_credential(&c);
                        }
                    }
                    self.batch
                        .delete_cf(cf(self.db, CF_PROJECTS), key2(organisation, name));
                    Ok(())
                }
            }
            Command::CreateCredential(rec) => self.create_credential(rec)?,
            Command::RevokeCredential { id, revoked_at } => match self.reader.credential(id)? {
                None => Err(Refusal::CredentialUnknown(id.clone())),
                Some(mut rec) => {
                    // Revoking twice keeps the first time.
                    rec.revoked_at.get_or_insert(*revoked_at);
                    self.batch
                        .put_cf(cf(self.db, CF_CREDENTIALS), id, encode(&rec));
                    Ok(())
                }
            },
            Command::AddSigningKey {
                key,
                retire_others_at,
            } => {
                for mut old in self.reader.signing_keys()? {
                    if old.retire_at.is_none() {
                        old.retire_at = Some(*retire_others_at);
                        self.batch
                            .put_cf(cf(self.db, CF_SIGNING_KEYS), &old.kid, encode(&old));
                    }
                }
                self.batch
                    .put_cf(cf(self.db, CF_SIGNING_KEYS), &key.kid, encode(key));
                Ok(())
            }
            other => unreachable!("{} is not a tenancy command", other.kind()),
        };
        Ok(r)
    }

    fn create_credential(
        &mut self,
        rec: &CredentialRecord,
    ) -> Result<Result<(), Refusal>, ApplyError> {
        let org = &rec.organisation;
        if self.reader.organisation(org)?.is_none() {
            return Ok(Err(Refusal::OrganisationUnknown(org.clone())));
        }
        if let Some(p) = &rec.project {
            if self.reader.project(org, p)?.is_none() {
                return Ok(Err(Refusal::ProjectUnknown {
                    organisation: org.clone(),
                    project: p.clone(),
                }));
            }
        }
        if self.reader.credential(&rec.id)?.is_some() {
            return Ok(Err(Refusal::CredentialExists {
                organisation: org.clone(),
                name: rec.name.clone(),
            }));
        }
        let by_org = cf(self.db, CF_CREDENTIALS_BY_ORG);
        if self
            .db
            .get_pinned_cf(by_org, key2(org, &rec.name))
            .map_err(ApplyError::Db)?
            .is_some()
        {
            return Ok(Err(Refusal::CredentialExists {
                organisation: org.clone(),
                name: rec.name.clone(),
            }));
        }
        self.batch.put_cf(by_org, key2(org, &rec.name), &rec.id);
        self.batch
            .put_cf(cf(self.db, CF_CREDENTIALS), &rec.id, encode(rec));
        Ok(Ok(()))
    }

    fn delete_organisation(&mut self, name: &str) -> Result<Result<(), Refusal>, ApplyError> {
        if self.reader.organisation(name)?.is_none() {
            return Ok(Err(Refusal::OrganisationUnknown(name.to_string())));
        }
        if self
            .reader
            .all_namespaces()?
            .iter()
            .any(|n| n.organisation.as_deref() == Some(name))
        {
            return Ok(Err(Refusal::OrganisationNotEmpty(name.to_string())));
        }
        for p in self.reader.projects(name)? {
            self.batch
                .delete_cf(cf(self.db, CF_PROJECTS), key2(name, &p.name));
        }
        for c in self.reader.credentials(name)? {
            self.delete_credential(&c);
        }
        self.batch.delete_cf(cf(self.db, CF_ORGS), name);
        Ok(Ok(()))
    }

    fn delete_credential(&mut self, c: &CredentialRecord) {
        self.batch.delete_cf(cf(self.db, CF_CREDENTIALS), &c.id);
        self.batch.delete_cf(
            cf(self.db, CF_CREDENTIALS_BY_ORG),
            key2(&c.organisation, &c.name),
        );
    }

    pub(crate) fn delete_namespace(
        &mut self,
        name: &str,
    ) -> Result<Result<(), Refusal>, ApplyError> {
        if self.reader.namespace(name)?.is_none() {
            return Ok(Err(Refusal::NamespaceUnknown(name.to_string())));
        }
        if !self
            .reader
            .repositories(Some(name), None, 1)?
            .items
            .is_empty()
        {
            return Ok(Err(Refusal::NamespaceNotEmpty(name.to_string())));
        }
        self.batch.delete_cf(cf(self.db, CF_NAMESPACES), name);
        self.batch
            .delete_cf(cf(self.db, crate::store::CF_NS_USAGE), name);
        // Its usage samples: a namespace made again later starts afresh.
        self.batch.delete_range_cf(
            cf(self.db, crate::store::CF_NS_USAGE_DAYS),
            crate::model::usage::day_key(name, 0),
            crate::model::usage::day_key(name, u64::MAX),
        );
        Ok(Ok(()))
    }
}
