//! Reference point for `scripts/bench-cluster --etcd`: puts of manifest-sized
//! values into etcd through its JSON gateway (HTTP/1.1 + JSON, as `tcr
//! bench` talks to tcr), 8 clients, 2,000 puts. Prints one JSON line:
//! clients, ops/s, p99 in ms.
//! Usage: etcd_put_bench <client-url>

use std::time::Instant;

use futures::StreamExt;

const PUTS: usize = 2000;
const CLIENTS: usize = 8;

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .expect("usage: etcd_put_bench <client-url>");
    let client = reqwest::Client::new();
    let value = b64(&vec![b'm'; 600]);
    let started = Instant::now();
    let mut lat: Vec<u128> = futures::stream::iter(0..PUTS)
        .map(|i| {
            let (client, url, value) = (client.clone(), url.clone(), value.clone());
            async move {
                let t = Instant::now();
                let body = serde_json::json!({"key": b64(format!("bench/t{i:06}").as_bytes()), "value": value});
                let r = client.post(format!("{url}/v3/kv/put")).json(&body).send().await?;
                anyhow::ensure!(r.status().is_success(), "etcd put: {}", r.status());
                r.bytes().await?;
                anyhow::Ok(t.elapsed().as_micros())
            }
        })
        .buffer_unordered(CLIENTS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)] as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({"clients": CLIENTS, "ops_per_s": PUTS as f64 / secs, "p99_ms": p99})
    );
    Ok(())
}
