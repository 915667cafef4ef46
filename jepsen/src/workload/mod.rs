//! Clients: each workload's operations against random nodes, recorded with
//! their outcome. An answer that proves the operation did not happen (a
//! refused connection, a 4xx) is `fail`; a timeout or a 5xx is `info`, as
//! the operation may still take effect.

pub mod blobs;
pub mod namespaces;
pub mod tags;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::history::{Op, Recorder, Type};

pub struct Ctx {
    /// Node i's URL at index i - 1.
    pub urls: Vec<String>,
    pub token: String,
    pub http: reqwest::Client,
    pub rec: Arc<Recorder>,
}

impl Ctx {
    pub fn new(urls: Vec<String>, token: String, rec: Arc<Recorder>) -> Ctx {
        Ctx {
            urls,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(2))
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            rec,
        }
    }

    pub fn random_node(&self) -> usize {
        rand::rng().random_range(1..=self.urls.len())
    }

    pub fn url(&self, node: usize, path: &str) -> String {
        format!("{}{path}", self.urls[node - 1])
    }
}

/// What one operation came to.
pub enum Outcome {
    Ok(Option<String>),
    Fail(String),
    Info(String),
}

pub fn from_error(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        Outcome::Fail(format!("connect: {e}"))
    } else {
        Outcome::Info(e.to_string())
    }
}

/// A status that is not success: 4xx means refused (it did not happen),
/// except 408 and 429; anything else is indeterminate.
pub fn from_status(status: reqwest::StatusCode, body: &str) -> Outcome {
    let msg = format!("{status}: {}", body.chars().take(200).collect::<String>());
    if status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        Outcome::Fail(msg)
    } else {
        Outcome::Info(msg)
    }
}

/// The outcome of a request whose success is exactly `ok` (with no value).
pub async fn expect(
    r: Result<reqwest::Response, reqwest::Error>,
    ok: reqwest::StatusCode,
) -> Outcome {
    match r {
        Err(e) => from_error(&e),
        Ok(r) if r.status() == ok => Outcome::Ok(None),
        Ok(r) => {
            let s = r.status();
            from_status(s, &r.text().await.unwrap_or_default())
        }
    }
}

/// One operation a workload chose: what to record, and how to run it.
pub struct Invocation {
    pub f: &'static str,
    pub key: Option<String>,
    pub value: Option<String>,
    pub node: usize,
}

/// Record `inv`, run `run`, record its outcome; true when indeterminate
/// (the caller then takes a new process number).
pub async fn perform<F>(ctx: &Ctx, workload: &str, process: i64, inv: Invocation, run: F) -> bool
where
    F: std::future::Future<Output = Outcome>,
{
    let op = Op {
        index: 0,
        process,
        kind: Type::Invoke,
        f: inv.f.to_string(),
        workload: workload.to_string(),
        key: inv.key,
        value: inv.value,
        time: 0,
        node: Some(inv.node),
        error: None,
    };
    let invoked = ctx.rec.record(op);
    let outcome = run.await;
    let (kind, value, error) = match outcome {
        Outcome::Ok(v) => (Type::Ok, v.or(invoked.value.clone()), None),
        Outcome::Fail(e) => (Type::Fail, invoked.value.clone(), Some(e)),
        Outcome::Info(e) => (Type::Info, invoked.value.clone(), Some(e)),
    };
    ctx.rec.record(Op {
        kind,
        value,
        error,
        ..invoked
    });
    kind == Type::Info
}

/// Run `op` in a loop until `stop` is set, as process `first`, `first + stride`,
/// ... (a new number after each indeterminate operation).
pub async fn client_loop<F, Fut>(first: i64, stride: i64, stop: Arc<AtomicBool>, mut op: F)
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut process = first;
    while !stop.load(Ordering::Relaxed) {
        if op(process).await {
            process += stride;
        }
        let pause = rand::rng().random_range(5..30);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}
