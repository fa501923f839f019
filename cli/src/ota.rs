//! `kiln keygen`, `kiln sign`, `kiln verify` and `kiln ota …`: release
//! keys, signed artifacts, and the update service's admin and device
//! sides.

use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};

const SECRET_TAG: &str = "kiln-ed25519-secret";
const PUBLIC_TAG: &str = "kiln-ed25519-public";

/// Reads a key file: `TAG HEX` on one line (what `kiln keygen` writes).
fn read_key(path: &Path, tag: &str) -> Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (t, hex) = text.trim().split_once(' ').unwrap_or(("", ""));
    if t != tag {
        bail!(
            "{}: not a {} file (expected one line `{tag} HEX`, as `kiln keygen` writes)",
            path.display(),
            if tag == SECRET_TAG {
                "secret key"
            } else {
                "public key"
            }
        );
    }
    let mut key = [0u8; 32];
    kiln_protocol::ota::hex_decode(hex.trim(), &mut key)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(key)
}

pub fn read_secret(path: &Path) -> Result<[u8; 32]> {
    read_key(path, SECRET_TAG)
}

pub fn read_public(path: &Path) -> Result<[u8; 32]> {
    read_key(path, PUBLIC_TAG)
}

/// `kiln keygen -o NAME`: NAME.key (secret, owner-only) and NAME.pub.
pub fn keygen(out: &Path) -> Result<()> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow!("no OS randomness: {e}"))?;
    let public = kiln_format::public_key(&secret);
    let key = out.with_extension("key");
    let pubf = out.with_extension("pub");
    if key.exists() {
        bail!(
            "{} exists: refusing to overwrite a secret key (remove it first)",
            key.display()
        );
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&key)
        .with_context(|| format!("cannot create {}", key.display()))?;
    std::io::Write::write_all(
        &mut f,
        format!("{SECRET_TAG} {}\n", kiln_protocol::ota::to_hex(&secret)).as_bytes(),
    )?;
    std::fs::write(
        &pubf,
        format!("{PUBLIC_TAG} {}\n", kiln_protocol::ota::to_hex(&public)),
    )
    .with_context(|| format!("cannot write {}", pubf.display()))?;
    println!(
        "key {}: secret {} (keep it offline), public {}",
        kiln_format::KeyId::of(&public),
        key.display(),
        pubf.display()
    );
    Ok(())
}

/// `kiln sign ARTIFACT --key K [-o OUT]`.
pub fn sign(artifact: &Path, key: &Path, out: Option<&Path>) -> Result<()> {
    let secret = read_secret(key)?;
    let bytes =
        std::fs::read(artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    let signed =
        kiln_format::sign(&bytes, &secret).map_err(|e| anyhow!("{}: {e}", artifact.display()))?;
    let out = out.unwrap_or(artifact);
    std::fs::write(out, &signed).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{}: signed by key {} ({} bytes)",
        out.display(),
        kiln_format::KeyId::of(&kiln_format::public_key(&secret)),
        signed.len()
    );
    Ok(())
}

/// `kiln verify ARTIFACT --pub P…`: the signing key id, or why not.
pub fn verify(artifact: &Path, keys: &[PathBuf]) -> Result<kiln_format::KeyId, VerifyError> {
    let trusted = keys
        .iter()
        .map(|p| read_public(p))
        .collect::<Result<Vec<_>>>()
        .map_err(VerifyError::Usage)?;
    let bytes = std::fs::read(artifact)
        .with_context(|| format!("cannot read {}", artifact.display()))
        .map_err(VerifyError::Usage)?;
    let mut words = vec![0u128; bytes.len().div_ceil(16)];
    let aligned: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    aligned[..bytes.len()].copy_from_slice(&bytes);
    kiln_format::View::parse(&aligned[..bytes.len()])
        .and_then(|v| v.verify_signature(&trusted))
        .map_err(|e| VerifyError::Refused(anyhow!("{}: {e}", artifact.display())))
}

/// Why `kiln verify` failed: the invocation, or the artifact.
pub enum VerifyError {
    Usage(anyhow::Error),
    Refused(anyhow::Error),
}

/// An admin call to the collector: the JSON reply.
fn admin_call(
    url: &str,
    token: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<serde_json::Value> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(120)))
            .build(),
    );
    let full = format!("{}{path}", url.trim_end_matches('/'));
    let auth = format!("Bearer {token}");
    let mut response = match body {
        Some(b) => agent
            .post(&full)
            .header("authorization", &auth)
            .header("x-kiln-actor", &whoami())
            .send(&b[..]),
        None => agent.get(&full).header("authorization", &auth).call(),
    }
    .with_context(|| format!("cannot reach {full}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if status != 200 {
        let why = value["error"].as_str().map_or(text.clone(), str::to_string);
        bail!("{full}: HTTP {status}: {why}");
    }
    Ok(value)
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "admin".into())
}

/// What `kiln ota` admin commands share.
pub struct Admin<'a> {
    pub url: &'a str,
    pub token: &'a str,
    pub model: &'a str,
}

/// `kiln ota publish ARTIFACT --version V`.
pub fn publish(a: &Admin<'_>, artifact: &Path, version: &str) -> Result<()> {
    let bytes =
        std::fs::read(artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    let r = admin_call(
        a.url,
        a.token,
        &format!("/v1/ota/{}/releases/{version}", a.model),
        Some(bytes),
    )?;
    println!(
        "published {} {version}: sha256 {}, {} bytes, signed by {}",
        a.model, r["sha256"], r["length"], r["key_id"]
    );
    Ok(())
}

/// `kiln ota rollout|pause|resume|abort|rollback`: one channel move.
pub fn channel_move(
    a: &Admin<'_>,
    channel: &str,
    action: &str,
    body: serde_json::Value,
) -> Result<()> {
    let r = admin_call(
        a.url,
        a.token,
        &format!("/v1/ota/{}/channels/{channel}/{action}", a.model),
        Some(body.to_string().into_bytes()),
    )?;
    print_channel(&r);
    Ok(())
}

fn print_channel(ch: &serde_json::Value) {
    let rollout = &ch["rollout"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    if rollout.is_null() {
        println!(
            "{} {}: stable {} (serial {})",
            s(&ch["model"]),
            s(&ch["channel"]),
            s(&ch["stable"]),
            ch["serial"]
        );
    } else {
        println!(
            "{} {}: stable {}, rolling out {} to {}%{} (serial {})",
            s(&ch["model"]),
            s(&ch["channel"]),
            s(&ch["stable"]),
            s(&rollout["version"]),
            rollout["percent"],
            if rollout["paused"] == true {
                ", paused"
            } else {
                ""
            },
            ch["serial"]
        );
    }
}

/// `kiln ota status`: channels, releases and the timeline of moves.
pub fn status(a: &Admin<'_>, json: bool) -> Result<()> {
    let r = admin_call(a.url, a.token, &format!("/v1/ota/{}/status", a.model), None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    for ch in r["channels"].as_array().into_iter().flatten() {
        print_channel(ch);
    }
    println!("releases:");
    for rel in r["releases"].as_array().into_iter().flatten() {
        println!(
            "  {:<10} {} bytes  sha256 {}  key {}",
            rel["version"].as_str().unwrap_or(""),
            rel["length"],
            rel["sha256"].as_str().unwrap_or(""),
            rel["key_id"].as_str().unwrap_or("")
        );
    }
    println!("timeline:");
    for e in r["events"].as_array().into_iter().flatten() {
        println!("  {}", timeline_line(e));
    }
    Ok(())
}

/// One event as a timeline line.
pub fn timeline_line(e: &serde_json::Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    format!(
        "#{:<3} t={} {:<13} {:<8} {} -> {} {}% serial {} by {}{}",
        e["seq"],
        e["at"],
        s("action"),
        s("channel"),
        if s("from").is_empty() {
            "-".into()
        } else {
            s("from")
        },
        s("to"),
        e["percent"],
        e["serial"],
        s("actor"),
        if s("detail").is_empty() {
            String::new()
        } else {
            format!(" ({})", s("detail"))
        }
    )
}

/// `kiln ota pull`: one device update.
pub fn pull(config: kiln_runtime_native::ota::OtaConfig) -> Result<()> {
    use kiln_runtime_native::ota::{OtaClient, Pulled};
    let mut client = OtaClient::open(config)?;
    match client.pull()? {
        Pulled::UpToDate => println!(
            "up to date: {}",
            client
                .current()
                .map_or("nothing installed", |s| s.version.as_str())
        ),
        Pulled::Refused { version } => {
            println!("refused {version}: it failed on this device before")
        }
        Pulled::Updated { from, to, received } => println!(
            "updated {} -> {to} ({received} bytes downloaded); previous kept",
            from.as_deref().unwrap_or("nothing")
        ),
    }
    Ok(())
}
