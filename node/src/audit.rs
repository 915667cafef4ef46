//! Who a write acts for: the request (or system job) a Raft command comes
//! from travels with the task that proposes it, and `Metadata::write`
//! attaches it to the command for the audit trail (`tcr_raft::audit`).
//! The leader also prunes the trail to `--audit-retention`.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tcr_raft::{Actor, AuditContext, Command};
use tcr_storage::clock::now_ms;

use crate::auth::{Caller, Subject};
use crate::state::JobsState;

/// The request (or job) behind the writes of the current task.
#[derive(Clone, Debug)]
pub struct Origin {
    pub actor: Actor,
    pub address: Option<IpAddr>,
}

tokio::task_local! {
    static ORIGIN: Origin;
}

impl Origin {
    pub fn of(caller: &Caller, address: Option<IpAddr>) -> Origin {
        let actor = match &caller.subject {
            Subject::Admin => Actor::Operator,
            Subject::Anonymous => Actor::Anonymous,
            Subject::Credential(c) => Actor::Credential {
                id: c.id.clone(),
                name: c.name.clone(),
                organisation: c.organisation.clone(),
            },
        };
        Origin { actor, address }
    }

    pub fn system(job: &str) -> Origin {
        Origin {
            actor: Actor::System(job.to_string()),
            address: None,
        }
    }
}

/// Run `f` with its writes attributed to `origin`.
pub async fn within<F: Future>(origin: Origin, f: F) -> F::Output {
    ORIGIN.scope(origin, f).await
}

/// The context of a write proposed now by node `node` from this task. A
/// write outside any request or job is the node's own.
pub fn context(node: u64) -> AuditContext {
    let origin = ORIGIN
        .try_with(Origin::clone)
        .unwrap_or_else(|_| Origin::system("node"));
    AuditContext {
        at_ms: now_ms(),
        actor: origin.actor,
        address: origin.address.map(|a| a.to_string()),
        node,
    }
}

/// How often the leader looks for events past the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// On whichever node leads: forget events older than `retention`, in one
/// command per check (a range delete in the state machine), and only when
/// there is something to forget.
pub async fn prune(st: Arc<JobsState>, retention: Duration) {
    let mut tick = tokio::time::interval(PRUNE_EVERY.min(retention.max(Duration::from_secs(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !st.meta.consensus().is_leader() {
            continue;
        }
        let before_ms =
            now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        match st.meta.reader().audit_oldest_ms() {
            Ok(Some(oldest)) if oldest < before_ms => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("reading the audit trail: {e}");
                continue;
            }
        }
        match st.meta.write(Command::PruneAudit { before_ms }).await {
            Ok(()) => tracing::info!(before_ms, "forgot audit events past the retention"),
            Err(e) => tracing::debug!("pruning the audit trail: {e}"),
        }
    }
}
