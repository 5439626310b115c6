//! `basic_auth_users`: HTTP basic auth against bcrypt hashes.
//!
//! bcrypt is slow on purpose (about 70 ms at cost 10), and Prometheus scrapes
//! every few seconds with the same credentials, so successful verifications
//! are cached, as exporter-toolkit does: keyed by a SHA-256 of (user, hash,
//! password), at most [`CACHE_SIZE`] entries, compared in constant time. An
//! unknown user is checked against a dummy hash of the same cost, so timing
//! does not tell which users exist. bcrypt runs on the blocking pool, one at a
//! time, so a flood of wrong passwords costs one core, not the runtime.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};

use super::HttpError;
use super::webconfig::Secret;

/// Successful verifications remembered.
const CACHE_SIZE: usize = 100;

pub(crate) struct BasicAuth {
    /// user -> bcrypt hash.
    users: HashMap<String, String>,
    /// Highest cost among the users' hashes: the dummy hash uses it.
    max_cost: u32,
    /// Made on first use (costs one bcrypt hash).
    dummy: OnceLock<String>,
    /// SHA-256 keys of recent successful (user, hash, password), oldest first.
    cache: Mutex<VecDeque<[u8; 32]>>,
    /// One bcrypt at a time.
    bcrypt_lock: Mutex<()>,
}

impl BasicAuth {
    pub fn new(
        users: HashMap<String, Secret>,
        err: &dyn Fn(&str, String) -> HttpError,
    ) -> Result<Self, HttpError> {
        let mut max_cost = 4;
        let mut out = HashMap::new();
        for (user, Secret(hash)) in users {
            let key = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(err(
                    &key,
                    "a basic-auth user name cannot contain ':'".into(),
                ));
            }
            let parts = bcrypt::HashParts::from_str(&hash).map_err(|e| {
                err(
                    &key,
                    format!(
                        "not a bcrypt hash ({e}); make one with \
                         `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                    ),
                )
            })?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(err(&key, format!("bcrypt cost {cost} is outside 4..=31")));
            }
            max_cost = max_cost.max(cost);
            out.insert(user, hash);
        }
        Ok(Self {
            users: out,
            max_cost,
            dummy: OnceLock::new(),
            cache: Mutex::new(VecDeque::new()),
            bcrypt_lock: Mutex::new(()),
        })
    }

    /// The user whose password the `Authorization` header holds, if it
    /// holds a configured user's password.
    pub async fn check(self: &Arc<Self>, header: Option<&HeaderValue>) -> Option<String> {
        let (user, password) = header.and_then(parse_basic)?;
        let known = self.users.get(&user).cloned();
        let key = known.as_ref().map(|hash| cache_key(&user, hash, &password));
        if let Some(key) = &key
            && self.cached(key)
        {
            return Some(user);
        }
        let this = Arc::clone(self);
        let verified = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = this.bcrypt_lock.lock().unwrap_or_else(|e| e.into_inner());
            match &known {
                Some(hash) => bcrypt::verify(&password, hash).unwrap_or(false),
                None => {
                    // Same work as for a real user; the answer is no.
                    let _ = bcrypt::verify(&password, this.dummy_hash());
                    false
                }
            }
        })
        .await
        .unwrap_or(false);
        if verified && let Some(key) = key {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_SIZE {
                cache.pop_front();
            }
            cache.push_back(key);
        }
        verified.then_some(user)
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Look at every entry, so the time does not depend on where it matched.
        cache.iter().fold(false, |found, k| found | ct_eq(k, key))
    }

    fn dummy_hash(&self) -> &str {
        self.dummy.get_or_init(|| {
            // The cost was checked at load, so this does not fail; if it did,
            // verify would answer an error, which counts as a no.
            bcrypt::hash("relstat: no such user", self.max_cost).unwrap_or_default()
        })
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn parse_basic(header: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let value = header.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn cache_key(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length prefixes keep ("a", "b:c") and ("a:b", "c") apart.
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    out
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
