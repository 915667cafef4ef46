//! `tcr bench`: a registry benchmark in the spirit of `etcdctl check perf`.
//! It speaks only the OCI Distribution API (plus tcr's namespace call, which
//! it skips where absent), so it runs against any registry for comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Client, Response, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::output::{table, Output};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long)]
    url: String,
    /// Namespace to push into (created through tcr's API where it exists).
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Size of the large blob, MiB.
    #[arg(long, default_value_t = 256)]
    large_mib: u64,
    /// Chunk size of the chunked large-blob push, MiB.
    #[arg(long, default_value_t = 16)]
    chunk_mib: u64,
    /// Speak HTTP/2 to an https registry (negotiated by ALPN). Off by
    /// default: docker and containerd push and pull over HTTP/1.1, one
    /// connection per transfer, and so does the benchmark.
    #[arg(long)]
    http2: bool,
    /// Number of small blobs to push.
    #[arg(long, default_value_t = 2000)]
    small_blobs: usize,
    /// Size of each small blob, bytes.
    #[arg(long, default_value_t = 4096)]
    small_size: usize,
    /// Concurrent clients for the push phases.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Manifests to PUT in the manifest phase.
    #[arg(long, default_value_t = 2000)]
    manifests: usize,
    /// Length of the manifest GET phase, seconds.
    #[arg(long, default_value_t = 10)]
    get_seconds: u64,
    /// Concurrent connections in the manifest GET phase.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Tags in the repository whose tag list is timed.
    #[arg(long, default_value_t = 5000)]
    tags: usize,
    /// Repository to push into, inside the namespace (default: a new random
    /// one per run); with --first-tag, rounds of one long run reuse it.
    #[arg(long)]
    repo: Option<String>,
    /// The repository already holds tags t0000000 up to this one (pushed by
    /// earlier runs): manifest-put pushes the next ones.
    #[arg(long, default_value_t = 0)]
    first_tag: usize,
    /// Phases to run (comma separated): large,small,manifest-put,manifest-get,tags
    #[arg(long, default_value = "large,small,manifest-put,manifest-get,tags")]
    phases: String,
}

struct Bench {
    http: Client,
    base: String,
    token: Option<String>,
    repo: String,
    results: Vec<(String, f64, &'static str)>,
    show_progress: bool,
    large_bytes: u64,
    chunk_mib: u64,
    small_blobs: usize,
    small_size: usize,
    concurrency: usize,
    manifests: usize,
    get_seconds: u64,
    connections: usize,
    tags: usize,
    pushed_tags: usize,
}

const BLOCK: usize = 1 << 20;
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Deterministic, unique content: a random 1 MiB block per seed, with the
/// block number stamped in, so large blobs cost no memory to produce.
#[derive(Clone)]
struct Content {
    base: Arc<Vec<u8>>,
    seed: u64,
    size: u64,
}

impl Content {
    fn new(seed: u64, size: u64) -> Content {
        let mut base = vec![0u8; BLOCK];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut base);
        Content {
            base: Arc::new(base),
            seed,
            size,
        }
    }

    /// The bytes from `offset`, at most one block.
    fn block(&self, index: u64) -> Bytes {
        let start = index * BLOCK as u64;
        let len = (self.size - start).min(BLOCK as u64) as usize;
        let mut b = self.base[..len].to_vec();
        let stamp = [self.seed.to_le_bytes(), index.to_le_bytes()].concat();
        let n = stamp.len().min(len);
        b[..n].copy_from_slice(&stamp[..n]);
        Bytes::from(b)
    }

    fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK as u64)
    }

    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for i in 0..self.blocks() {
            h.update(self.block(i));
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    fn range_stream(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let c = self.clone();
        stream::iter(from_block..to_block).map(move |i| Ok(c.block(i)))
    }
}

fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

async fn expect(resp: Response, want: StatusCode, what: &str) -> anyhow::Result<Response> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    bail!(
        "{what}: expected {want}, got {status}: {}",
        body.chars().take(300).collect::<String>()
    )
}

impl Bench {
    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{}", self.base, location)
        }
    }

    fn record(&mut self, name: &str, value: f64, unit: &'static str) {
        if self.show_progress {
            eprintln!("  {name}: {value:.1} {unit}");
        }
        self.results.push((name.to_string(), value, unit));
    }

    /// The spec's monolithic upload, which every registry implements: POST
    /// opens a session, one PUT carries the whole blob and its digest.
    async fn push_monolithic(
        &self,
        digest: &str,
        size: u64,
        body: reqwest::Body,
    ) -> anyhow::Result<()> {
        let loc = self.absolute(&self.start_upload().await?);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .req(reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await?;
        expect(resp, StatusCode::CREATED, "monolithic blob push").await?;
        Ok(())
    }

    async fn start_upload(&self) -> anyhow::Result<String> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.repo);
        let resp = self
            .req(reqwest::Method::POST, &url)
            .header(CONTENT_LENGTH, 0)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::ACCEPTED, "start upload").await?;
        location(&resp)
    }

    async fn large(&mut self) -> anyhow::Result<()> {
        let size = self.large_bytes;
        let mono = Content::new(rand::random(), size);
        let mono_digest = mono.digest();
        let started = Instant::now();
        self.push_monolithic(
            &mono_digest,
            size,
            reqwest::Body::wrap_stream(mono.range_stream(0, mono.blocks())),
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        self.record("large blob push, monolithic", mb(size) / secs, "MB/s");

        let chunked = Content::new(rand::random(), size);
        let chunked_digest = chunked.digest();
        let per_chunk = self.chunk_mib.max(1);
        let started = Instant::now();
        let mut loc = self.absolute(&self.start_upload().await?);
        let mut block = 0;
        while block < chunked.blocks() {
            let end = (block + per_chunk).min(chunked.blocks());
            let from = block * BLOCK as u64;
            let to = (end * BLOCK as u64).min(size);
            let resp = self
                .req(reqwest::Method::PATCH, &loc)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{}-{}", from, to - 1))
                .header(CONTENT_LENGTH, to - from)
                .body(reqwest::Body::wrap_stream(chunked.range_stream(block, end)))
                .send()
                .await?;
            let resp = expect(resp, StatusCode::ACCEPTED, "chunk upload").await?;
            loc = self.absolute(&location(&resp)?);
            block = end;
        }
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .req(
                reqwest::Method::PUT,
                &format!("{loc}{sep}digest={chunked_digest}"),
            )
            .header(CONTENT_LENGTH, 0)
            .send()
            .await?;
        expect(resp, StatusCode::CREATED, "finish chunked upload").await?;
        let secs = started.elapsed().as_secs_f64();
        self.record("large blob push, chunked", mb(size) / secs, "MB/s");

        // Median of three pulls: one pull of a cached file is noisy.
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, mono_digest);
        let mut pulls = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let resp = self.req(reqwest::Method::GET, &url).send().await?;
            let resp = expect(resp, StatusCode::OK, "blob pull").await?;
            let mut got = 0u64;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.try_next().await? {
                got += chunk.len() as u64;
            }
            if got != size {
                bail!("blob pull returned {got} bytes, expected {size}");
            }
            pulls.push(started.elapsed().as_secs_f64());
        }
        pulls.sort_by(f64::total_cmp);
        let secs = pulls[1];
        self.record("large blob pull (median of 3)", mb(size) / secs, "MB/s");

        // The same blob as ranges of the chunk size, four at a time (a
        // client resuming, a lazy-pulling snapshotter): median of three.
        let span = self.chunk_mib.max(1) << 20;
        let mut passes = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let starts: Vec<u64> = (0..size).step_by(span as usize).collect();
            stream::iter(starts)
                .map(|from| self.pull_range(&url, from, (from + span).min(size)))
                .buffer_unordered(4)
                .try_collect::<Vec<()>>()
                .await?;
            passes.push(started.elapsed().as_secs_f64());
        }
        passes.sort_by(f64::total_cmp);
        let name = format!(
            "large blob pull, {} MiB ranges 4 at a time (median of 3)",
            span >> 20
        );
        self.record(&name, mb(size) / passes[1], "MB/s");
        Ok(())
    }

    /// Bytes `from..to` of the blob at `url`, checked for length.
    async fn pull_range(&self, url: &str, from: u64, to: u64) -> anyhow::Result<()> {
        let resp = self
            .req(reqwest::Method::GET, url)
            .header(reqwest::header::RANGE, format!("bytes={from}-{}", to - 1))
            .send()
            .await?;
        let resp = expect(resp, StatusCode::PARTIAL_CONTENT, "ranged pull").await?;
        let mut got = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.try_next().await? {
            got += chunk.len() as u64;
        }
        if got != to - from {
            bail!("a ranged pull returned {got} bytes, expected {}", to - from);
        }
        Ok(())
    }

    async fn small(&mut self) -> anyhow::Result<()> {
        let n = self.small_blobs;
        let size = self.small_size;
        let seed: u64 = rand::random();
        let blobs: Vec<(String, Bytes)> = (0..n)
            .map(|i| {
                let mut b = vec![0u8; size];
                rand::rngs::StdRng::seed_from_u64(seed ^ i as u64).fill_bytes(&mut b);
                (digest_of(&b), Bytes::from(b))
            })
            .collect();
        let started = Instant::now();
        let this = &*self;
        stream::iter(blobs)
            .map(|(d, b)| async move {
                let len = b.len() as u64;
                this.push_monolithic(&d, len, reqwest::Body::from(b)).await
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let secs = started.elapsed().as_secs_f64();
        self.record(
            &format!("small blob push ({} B, {} clients)", size, self.concurrency),
            n as f64 / secs,
            "ops/s",
        );
        Ok(())
    }

    /// Push the config and layer every bench manifest references.
    async fn manifest_parts(&self) -> anyhow::Result<(String, usize, String, usize)> {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let layer = Content::new(7, 1024).block(0).to_vec();
        let (cd, ld) = (digest_of(&config), digest_of(&layer));
        self.push_monolithic(&cd, config.len() as u64, config.clone().into())
            .await?;
        self.push_monolithic(&ld, layer.len() as u64, layer.clone().into())
            .await?;
        Ok((cd, config.len(), ld, layer.len()))
    }

    async fn put_manifests(
        &self,
        range: std::ops::Range<usize>,
        parts: &(String, usize, String, usize),
    ) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let run: u64 = rand::random();
        let latencies = stream::iter(range)
            .map(|i| async move {
                let t = Instant::now();
                let m = json!({
                    "schemaVersion": 2,
                    "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": parts.0, "size": parts.1},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": parts.2, "size": parts.3}],
                    "annotations": {"bench.run": run.to_string(), "bench.i": i.to_string()}
                });
                let url = format!("{}/v2/{}/manifests/{}", self.base, self.repo, tag(i));
                let resp = self
                    .req(reqwest::Method::PUT, &url)
                    .header(CONTENT_TYPE, MANIFEST_TYPE)
                    .body(serde_json::to_vec(&m)?)
                    .send()
                    .await?;
                expect(resp, StatusCode::CREATED, "manifest put").await?;
                anyhow::Ok(t.elapsed().as_micros().max(1) as u64)
            })
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<u64>>()
            .await?;
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for l in latencies {
            h.record(l)?;
        }
        Ok(h)
    }

    async fn manifest_put(&mut self) -> anyhow::Result<()> {
        let parts = self.manifest_parts().await?;
        let n = self.manifests;
        let first = self.pushed_tags;
        let started = Instant::now();
        let h = self.put_manifests(first..first + n, &parts).await?;
        let secs = started.elapsed().as_secs_f64();
        self.record(
            &format!("manifest PUT ({} clients)", self.concurrency),
            n as f64 / secs,
            "ops/s",
        );
        self.record(
            "manifest PUT p99",
            h.value_at_quantile(0.99) as f64 / 1000.0,
            "ms",
        );
        self.pushed_tags = first + n;
        Ok(())
    }

    async fn manifest_get(&mut self) -> anyhow::Result<()> {
        if self.pushed_tags == 0 {
            let parts = self.manifest_parts().await?;
            self.put_manifests(0..1, &parts).await?;
            self.pushed_tags = 1;
        }
        let url = format!("{}/v2/{}/manifests/{}", self.base, self.repo, tag(0));
        let deadline = Instant::now() + Duration::from_secs(self.get_seconds);
        let started = Instant::now();
        let this = &*self;
        let hists = stream::iter(0..self.connections)
            .map(|_| {
                let url = url.clone();
                async move {
                    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let resp = this
                            .req(reqwest::Method::GET, &url)
                            .header("accept", MANIFEST_TYPE)
                            .send()
                            .await?;
                        let resp = expect(resp, StatusCode::OK, "manifest get").await?;
                        resp.bytes().await?;
                        h.record(t.elapsed().as_micros().max(1) as u64)?;
                    }
                    anyhow::Ok(h)
                }
            })
            .buffer_unordered(self.connections)
            .try_collect::<Vec<_>>()
            .await?;
        let secs = started.elapsed().as_secs_f64();
        let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for h in hists {
            all.add(h)?;
        }
        let c = self.connections;
        self.record(
            &format!("manifest GET ({c} connections)"),
            all.len() as f64 / secs,
            "req/s",
        );
        self.record(
            "manifest GET p50",
            all.value_at_quantile(0.5) as f64 / 1000.0,
            "ms",
        );
        self.record(
            "manifest GET p99",
            all.value_at_quantile(0.99) as f64 / 1000.0,
            "ms",
        );
        Ok(())
    }

    async fn tags(&mut self) -> anyhow::Result<()> {
        if self.pushed_tags < self.tags {
            let parts = self.manifest_parts().await?;
            if self.show_progress {
                eprintln!(
                    "  pushing {} tags for the listing phase",
                    self.tags - self.pushed_tags
                );
            }
            self.put_manifests(self.pushed_tags..self.tags, &parts)
                .await?;
            self.pushed_tags = self.tags;
        }
        let mut totals = Vec::new();
        let mut pages = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let mut url = format!("{}/v2/{}/tags/list?n=1000", self.base, self.repo);
            let mut count = 0;
            loop {
                let page_started = Instant::now();
                let resp = self.req(reqwest::Method::GET, &url).send().await?;
                let resp = expect(resp, StatusCode::OK, "tag list").await?;
                let next = resp
                    .headers()
                    .get("link")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| l.split(';').next())
                    .map(|l| {
                        l.trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_string()
                    });
                let v: serde_json::Value = resp.json().await?;
                pages.push(page_started.elapsed().as_secs_f64() * 1000.0);
                count += v["tags"].as_array().map(Vec::len).unwrap_or(0);
                match next {
                    Some(n) => url = self.absolute(&n),
                    None => break,
                }
            }
            if count < self.pushed_tags {
                bail!(
                    "tag list returned {count} tags, expected {}",
                    self.pushed_tags
                );
            }
            totals.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        totals.sort_by(f64::total_cmp);
        pages.sort_by(f64::total_cmp);
        let n = self.pushed_tags;
        self.record(
            &format!("tag list, all {n} tags in pages of 1000 (median)"),
            totals[1],
            "ms",
        );
        self.record(
            &format!("tag list, one page of 1000 of {n} (p50)"),
            pages[pages.len() / 2],
            "ms",
        );
        self.record(
            &format!("tag list, one page of 1000 of {n} (max)"),
            *pages.last().expect("at least one page"),
            "ms",
        );
        Ok(())
    }
}

/// The bench's tag names sort in push order up to ten million.
fn tag(i: usize) -> String {
    format!("t{i:07}")
}

fn location(resp: &Response) -> anyhow::Result<String> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("upload response has no Location header"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub async fn run(
    args: BenchArgs,
    token: Option<String>,
    out: Output,
    http: reqwest::ClientBuilder,
) -> anyhow::Result<()> {
    let http = if args.http2 { http } else { http.http1_only() };
    let http = http
        .pool_max_idle_per_host(args.connections.max(args.concurrency) * 2)
        .tcp_nodelay(true)
        .build()?;
    let base = args.url.trim_end_matches('/').to_string();
    // tcr needs the namespace; other registries answer 404 here, which is fine.
    let mut ns = http
        .post(format!("{base}/v1/container-registries/namespaces"))
        .json(&json!({"name": args.namespace, "visibility": "private"}));
    if let Some(t) = &token {
        ns = ns.bearer_auth(t);
    }
    ns.send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let repo = match &args.repo {
        Some(r) => format!("{}/{r}", args.namespace),
        None => format!("{}/bench-{:08x}", args.namespace, rand::random::<u32>()),
    };
    let mut b = Bench {
        http,
        base,
        token,
        repo,
        results: Vec::new(),
        show_progress: out == Output::Human,
        large_bytes: args.large_mib << 20,
        chunk_mib: args.chunk_mib,
        small_blobs: args.small_blobs,
        small_size: args.small_size,
        concurrency: args.concurrency.max(1),
        manifests: args.manifests,
        get_seconds: args.get_seconds,
        connections: args.connections.max(1),
        tags: args.tags,
        pushed_tags: args.first_tag,
    };
    for phase in args
        .phases
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if b.show_progress {
            eprintln!("phase {phase} against {}", b.base);
        }
        match phase {
            "large" => b.large().await?,
            "small" => b.small().await?,
            "manifest-put" => b.manifest_put().await?,
            "manifest-get" => b.manifest_get().await?,
            "tags" => b.tags().await?,
            other => bail!("unknown phase '{other}'"),
        }
    }
    match out {
        Output::Json => {
            let results: serde_json::Map<String, serde_json::Value> = b
                .results
                .iter()
                .map(|(k, v, u)| (k.clone(), json!({"value": v, "unit": u})))
                .collect();
            println!("{}", json!({"url": b.base, "results": results}));
        }
        Output::Human => {
            let rows: Vec<Vec<String>> = b
                .results
                .iter()
                .map(|(k, v, u)| vec![k.clone(), format!("{v:.1}"), u.to_string()])
                .collect();
            table(&["METRIC", "VALUE", "UNIT"], &rows);
        }
    }
    Ok(())
}
