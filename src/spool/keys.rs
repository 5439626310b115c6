//! Ed25519 key pairs for bundle signing: one per site, so a compromised
//! site cannot sign another site's bundles.
//!
//! # Key files
//!
//! Both files hold one line: the standard base64 (RFC 4648, with padding)
//! of the 32-byte key, then a newline. `PREFIX.key` is the private key
//! (the Ed25519 seed), written with mode 0600 and never overwritten;
//! `PREFIX.pub` is the public key. A relay trusts a site by holding its
//! public key as `<trusted_keys_dir>/<site>.pub`: the file name binds the
//! key to the site, and a bundle's `site` must match the key verifying it.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} exists: refusing to overwrite a key (remove it first, or choose another --out)"
    )]
    Exists { path: PathBuf },
    #[error(
        "{path} is not an Ed25519 {kind} key: expected one line of base64 encoding 32 bytes ({detail})"
    )]
    Malformed {
        path: PathBuf,
        kind: &'static str,
        detail: String,
    },
    #[error("{path}: not a valid Ed25519 public key")]
    BadPoint { path: PathBuf },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// `relstat keygen --out PREFIX`: writes `PREFIX.key` (0600) and `PREFIX.pub`.
pub fn generate(prefix: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let (key_path, pub_path) = (with_suffix(prefix, ".key"), with_suffix(prefix, ".pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    write_new(&key_path, 0o600, &line(&seed))?;
    write_new(&pub_path, 0o644, &line(key.verifying_key().as_bytes()))?;
    Ok((key_path, pub_path))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn line(bytes: &[u8]) -> String {
    format!("{}\n", STANDARD.encode(bytes))
}

fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

fn read_32(path: &Path, kind: &'static str) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = |detail: String| KeyError::Malformed {
        path: path.to_path_buf(),
        kind,
        detail,
    };
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| malformed(e.to_string()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("found {} bytes", bytes.len())))
}

/// Reads a private key file (`[spool] signing_key_file`).
pub fn load_signing(path: &Path) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&read_32(path, "private")?))
}

/// Reads a public key file (`<trusted_keys_dir>/<site>.pub`).
pub fn load_verifying(path: &Path) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&read_32(path, "public")?).map_err(|_| KeyError::BadPoint {
        path: path.to_path_buf(),
    })
}

/// The trusted key file of `site`, if the name is usable as a file name.
pub fn trusted_path(dir: &Path, site: &str) -> Option<PathBuf> {
    let ok = !site.is_empty() && !site.starts_with('.') && !site.contains(['/', '\\', '\0']);
    ok.then(|| dir.join(format!("{site}.pub")))
}

/// Every `<site>.pub` in `dir` that loads: to name the site whose key did
/// sign a bundle that claims another site.
pub fn trusted_keys(dir: &Path) -> Vec<(String, VerifyingKey)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, VerifyingKey)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let site = name.strip_suffix(".pub")?.to_string();
            load_verifying(&e.path()).ok().map(|k| (site, k))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_a_matching_public_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = generate(&dir.path().join("site-a")).unwrap();
        assert_eq!(k, dir.path().join("site-a.key"));
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sk = load_signing(&k).unwrap();
        assert_eq!(load_verifying(&p).unwrap(), sk.verifying_key());
        let again = generate(&dir.path().join("site-a")).unwrap_err();
        assert!(
            again.to_string().contains("refusing to overwrite"),
            "{again}"
        );
    }

    #[test]
    fn a_malformed_key_file_says_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pub");
        std::fs::write(&p, "aGVsbG8=\n").unwrap();
        let e = load_verifying(&p).unwrap_err().to_string();
        assert!(e.contains("found 5 bytes") && e.contains("base64"), "{e}");
    }

    #[test]
    fn site_names_that_are_not_file_names_have_no_key() {
        let d = Path::new("/k");
        assert_eq!(
            trusted_path(d, "dc-east"),
            Some(PathBuf::from("/k/dc-east.pub"))
        );
        for bad in ["", "../etc", ".hidden", "a/b"] {
            assert_eq!(trusted_path(d, bad), None, "{bad}");
        }
    }
}
