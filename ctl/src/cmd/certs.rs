//! `tcr certs init`: a CA and a certificate per host, usable both as a
//! node's registry certificate and as its peer certificate, so a first
//! install or a test cluster needs no openssl recipe.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use tcr_tls::issue::Ca;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Write `ca.crt` and `ca.key` (unless DIR holds them already: then
    /// they sign the new certificates) and `<host>.crt`, `<host>.key`
    /// for each host. Keys are written readable by the owner only.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Hosts, comma-separated: each gets a certificate naming it (DNS
        /// name or IP address). `name=h1+h2` names one certificate `name`
        /// and lists several hosts in it.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// The CA's common name.
        #[arg(long, default_value = "tcr cluster CA")]
        ca_name: String,
    },
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    // Write beside, then rename: a node watching the file never reads
    // half of it.
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `name=h1+h2` or `h1`: the file name and the hosts of one certificate.
fn parse_host(spec: &str) -> anyhow::Result<(String, Vec<String>)> {
    let (name, hosts) = match spec.split_once('=') {
        Some((n, h)) => (n.to_string(), h.split('+').map(str::to_string).collect()),
        None => (spec.to_string(), vec![spec.to_string()]),
    };
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if name.is_empty() || !name.chars().all(safe) || hosts.iter().any(|h| h.is_empty()) {
        anyhow::bail!("'{spec}' is not a host (a DNS name or IP address, or name=h1+h2)");
    }
    Ok((name.replace(':', "_"), hosts))
}

pub fn run(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init {
            out,
            hosts,
            ca_name,
        } => {
            let specs = hosts
                .iter()
                .map(|h| parse_host(h.trim()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let (ca_crt, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
            let ca = if ca_crt.exists() && ca_key.exists() {
                let ca = Ca::load(
                    &std::fs::read_to_string(&ca_crt)?,
                    &std::fs::read_to_string(&ca_key)?,
                )
                .with_context(|| format!("loading the CA in {}", out.display()))?;
                eprintln!("using the existing CA {}", ca_crt.display());
                ca
            } else {
                let ca = Ca::new(&ca_name)?;
                write(&ca_key, ca.key_pem(), 0o600)?;
                write(&ca_crt, ca.cert_pem(), 0o644)?;
                eprintln!("wrote a new CA: {}", ca_crt.display());
                ca
            };
            for (name, hosts) in specs {
                let (cert, key) = ca.issue(&hosts)?;
                let (crt_path, key_path) = (
                    out.join(format!("{name}.crt")),
                    out.join(format!("{name}.key")),
                );
                write(&key_path, &key, 0o600)?;
                write(&crt_path, &cert, 0o644)?;
                eprintln!("wrote {} for {}", crt_path.display(), hosts.join(", "));
            }
            Ok(())
        }
    }
}
