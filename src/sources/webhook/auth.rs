//! Each tool's own authentication, checked in constant time. Which scheme a
//! tool uses is its registry entry's ([`AuthScheme`]):
//! - `HubSignature256`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of
//!   the body>`;
//! - `GitlabToken`: `X-Gitlab-Token: <secret>`;
//! - `BasicPassword`: HTTP basic auth whose password is the secret (or, when
//!   the secret contains ':', whose `user:password` is the secret);
//! - `SignatureOrBearer`: an HMAC-SHA256 signature of the body,
//!   `sha256=<hex>` (or bare hex) in `X-Relstat-Signature-256`,
//!   `X-Hub-Signature-256`, `X-Hub-Signature` (Jira Cloud) or `X-Signature`
//!   (Flux generic-hmac), or `Authorization: Bearer <secret>`.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use hyper::HeaderMap;
use sha2::{Digest, Sha256};

use crate::sources::presets::registry::{self, AuthScheme};

/// Signature headers other presets accept, in the order they are tried.
pub const SIGNATURE_HEADERS: [&str; 4] = [
    "x-relstat-signature-256",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-signature",
];

/// How one source authenticates its requests.
pub struct Auth {
    scheme: AuthScheme,
    secret: Vec<u8>,
}

impl Auth {
    /// The scheme of the tool called `preset` (an unknown name, which
    /// check-config refuses, gets the signature-or-bearer scheme).
    pub fn new(preset: &str, secret: Vec<u8>) -> Auth {
        let scheme = registry::tool(preset).map_or(AuthScheme::SignatureOrBearer, |t| t.auth);
        Auth { scheme, secret }
    }

    /// `Ok` when the request carries this source's credentials.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
        match self.by_headers(headers)? {
            None => Ok(()),
            Some(sig) => self.check_hmac(&sig, body),
        }
    }

    /// What the headers alone decide, before the body is read: `Err` for
    /// missing or bad credentials (a token, basic auth, a malformed
    /// signature); `Ok` when they are good or when only the body's HMAC can
    /// tell ([`Auth::verify`] then checks it).
    pub fn verify_headers(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        self.by_headers(headers).map(|_| ())
    }

    /// `Ok(None)`: authenticated by the headers; `Ok(Some(mac))`: the
    /// signature the body's HMAC must match.
    fn by_headers(&self, headers: &HeaderMap) -> Result<Option<Vec<u8>>, &'static str> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self.scheme {
            AuthScheme::HubSignature256 => match header("x-hub-signature-256") {
                Some(sig) => parse_signature(sig).map(Some),
                None => Err("missing X-Hub-Signature-256"),
            },
            AuthScheme::GitlabToken => match header("x-gitlab-token") {
                Some(t) if ct_eq(t.as_bytes(), &self.secret) => Ok(None),
                Some(_) => Err("bad X-Gitlab-Token"),
                None => Err("missing X-Gitlab-Token"),
            },
            AuthScheme::BasicPassword => {
                let Some(creds) = header("authorization").and_then(|a| strip_scheme(a, "basic"))
                else {
                    return Err("missing basic auth");
                };
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(creds.trim())
                    .map_err(|_| "bad basic auth")?;
                let whole = self.secret.contains(&b':');
                let given: &[u8] = if whole {
                    &decoded
                } else {
                    match decoded.iter().position(|b| *b == b':') {
                        Some(i) => &decoded[i + 1..],
                        None => return Err("bad basic auth"),
                    }
                };
                if ct_eq(given, &self.secret) {
                    Ok(None)
                } else {
                    Err("bad basic auth credentials")
                }
            }
            AuthScheme::SignatureOrBearer => {
                if let Some(sig) = SIGNATURE_HEADERS.iter().find_map(|h| header(h)) {
                    return parse_signature(sig).map(Some);
                }
                match header("authorization").and_then(|a| strip_scheme(a, "bearer")) {
                    Some(t) if ct_eq(t.trim().as_bytes(), &self.secret) => Ok(None),
                    Some(_) => Err("bad bearer token"),
                    None => Err("missing signature header or bearer token"),
                }
            }
        }
    }

    fn check_hmac(&self, sig: &[u8], body: &[u8]) -> Result<(), &'static str> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).map_err(|_| "bad secret")?;
        mac.update(body);
        mac.verify_slice(sig)
            .map_err(|_| "signature does not match the body")
    }
}

/// `sha256=<hex>` or bare hex: the 32 bytes of an HMAC-SHA256.
fn parse_signature(sig: &str) -> Result<Vec<u8>, &'static str> {
    let hex = sig.trim();
    let hex = hex.strip_prefix("sha256=").unwrap_or(hex);
    decode_hex(hex)
        .filter(|b| b.len() == 32)
        .ok_or("malformed signature (expected sha256=<64 hex digits>)")
}

/// `sha256=<hex>` of `body` under `secret`: what senders compute (tests,
/// docs, a chained relstat).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let out = mac.finalize().into_bytes();
    let mut s = String::from("sha256=");
    for b in out.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Equality that takes the same time wherever the inputs differ (and does
/// not reveal the secret's length): both sides are hashed first.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn github_signature_is_the_hmac_of_the_body() {
        let a = Auth::new("github", b"s3cret".to_vec());
        let sig = sign(b"s3cret", b"{}");
        assert!(
            a.verify(&headers(&[("x-hub-signature-256", &sig)]), b"{}")
                .is_ok()
        );
        assert!(
            a.verify(&headers(&[("x-hub-signature-256", &sig)]), b"{ }")
                .is_err()
        );
        assert!(a.verify(&headers(&[]), b"{}").is_err());
        assert!(
            a.verify(&headers(&[("x-hub-signature-256", "sha256=zz")]), b"{}")
                .is_err()
        );
    }

    #[test]
    fn headers_alone_refuse_what_they_can_and_leave_the_hmac_to_the_body() {
        let zeros = format!("sha256={}", "00".repeat(32));
        // github: a missing or malformed signature needs no body to refuse;
        // a well-formed one can only be checked against the body.
        let gh = Auth::new("github", b"s3cret".to_vec());
        assert!(gh.verify_headers(&headers(&[])).is_err());
        let short = headers(&[("x-hub-signature-256", "sha256=abcd")]);
        assert!(gh.verify_headers(&short).is_err());
        let zeros = headers(&[("x-hub-signature-256", &zeros)]);
        assert!(gh.verify_headers(&zeros).is_ok());
        assert!(gh.verify(&zeros, b"{}").is_err());
        // tokens, basic auth and bearer are decided by the headers
        let gl = Auth::new("gitlab", b"tok".to_vec());
        assert!(
            gl.verify_headers(&headers(&[("x-gitlab-token", "no")]))
                .is_err()
        );
        assert!(
            gl.verify_headers(&headers(&[("x-gitlab-token", "tok")]))
                .is_ok()
        );
        let j = Auth::new("jenkins", b"tok".to_vec());
        assert!(
            j.verify_headers(&headers(&[("authorization", "Bearer no")]))
                .is_err()
        );
        assert!(j.verify_headers(&headers(&[])).is_err());
    }

    #[test]
    fn gitlab_token_and_azure_basic_and_bearer() {
        let g = Auth::new("gitlab", b"tok".to_vec());
        assert!(
            g.verify(&headers(&[("x-gitlab-token", "tok")]), b"")
                .is_ok()
        );
        assert!(
            g.verify(&headers(&[("x-gitlab-token", "tok2")]), b"")
                .is_err()
        );
        let az = Auth::new("azure_devops", b"pw".to_vec());
        let ok = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:pw")
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:px")
        );
        assert!(az.verify(&headers(&[("authorization", &ok)]), b"").is_ok());
        assert!(
            az.verify(&headers(&[("authorization", &bad)]), b"")
                .is_err()
        );
        let j = Auth::new("jenkins", b"tok".to_vec());
        assert!(
            j.verify(&headers(&[("authorization", "Bearer tok")]), b"")
                .is_ok()
        );
        assert!(
            j.verify(&headers(&[("authorization", "Bearer no")]), b"")
                .is_err()
        );
        let sig = sign(b"tok", b"x");
        assert!(j.verify(&headers(&[("x-signature", &sig)]), b"x").is_ok());
        // a signature header that is wrong is not rescued by a bearer token
        assert!(
            j.verify(
                &headers(&[("x-signature", &sig), ("authorization", "Bearer tok")]),
                b"y"
            )
            .is_err()
        );
    }
}
