//! JSON Web Tokens (RFC 7519) signed with RS256, ES256 or EdDSA (Ed25519), verified
//! against a JSON Web Key Set (RFC 7517) with ring, and signed by the built-in issuer.
//!
//! An algorithm is only ever checked with a key of its own type (an RSA key for RS256,
//! a P-256 key for ES256, an Ed25519 key for EdDSA): `alg: none`, HMAC algorithms and
//! a header naming one algorithm over another's key are refused, so a token cannot
//! choose how it is verified.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, KeyPair};
use serde_json::{json, Value};

/// Longest token looked at.
pub const MAX_TOKEN: usize = 16 << 10;

/// Why a token was refused; the message names the claim or the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not RS256, ES256 or EdDSA (`none` included).
    #[error("token algorithm `{0}` is not accepted (RS256, ES256, EdDSA)")]
    Algorithm(String),
    /// No key of the issuer has the token's `kid` (or, without one, verifies it).
    #[error("token signed by an unknown key `{0}`")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("token signature does not verify")]
    Signature,
    /// Past `exp` (plus the allowed skew).
    #[error("token expired {0} s ago")]
    Expired(u64),
    /// Before `nbf` (minus the allowed skew).
    #[error("token not valid for another {0} s")]
    NotYetValid(u64),
    /// `exp` missing: tokens without an end are not taken.
    #[error("token has no `exp`")]
    NoExpiry,
    /// `iss` is not the configured issuer.
    #[error("token issuer `{0}` is not the expected one")]
    Issuer(String),
    /// `aud` does not include the configured audience.
    #[error("token audience does not include `{0}`")]
    Audience(String),
    /// No `sub`.
    #[error("token has no `sub`")]
    NoSubject,
}

/// A public key of a key set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point, `04 || x || y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// One key of a [`KeySet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// Its id (`kid`), possibly empty.
    pub kid: String,
    key: PublicKey,
}

/// A JSON Web Key Set: the keys an issuer signs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    /// Keys of the types accepted; others in the document are skipped.
    pub keys: Vec<Jwk>,
}

fn b64(field: &str, v: Option<&Value>) -> Result<Vec<u8>, String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{field}` missing"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("`{field}`: {e}"))
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`); keys of other types or uses
    /// (encryption, HMAC) are skipped, a malformed key of an accepted type is an error.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let doc: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no `keys` array")?;
        let mut out = Vec::new();
        for k in keys {
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let kid = k
                .get("kid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let key = match (
                k.get("kty").and_then(Value::as_str),
                k.get("crv").and_then(Value::as_str),
            ) {
                (Some("RSA"), _) => PublicKey::Rsa {
                    n: b64("n", k.get("n"))?,
                    e: b64("e", k.get("e"))?,
                },
                (Some("EC"), Some("P-256")) => {
                    let (x, y) = (b64("x", k.get("x"))?, b64("y", k.get("y"))?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(format!("key `{kid}`: P-256 coordinates are 32 bytes"));
                    }
                    PublicKey::P256([&[4u8][..], &x, &y].concat())
                }
                (Some("OKP"), Some("Ed25519")) => PublicKey::Ed25519(b64("x", k.get("x"))?),
                _ => continue,
            };
            out.push(Jwk { kid, key });
        }
        Ok(Self { keys: out })
    }

    /// The set as a JWKS document.
    pub fn to_json(&self) -> Value {
        let enc = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| match &k.key {
                PublicKey::Rsa { n, e } => json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid,
                    "n": enc(n), "e": enc(e),
                }),
                PublicKey::P256(point) => json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": k.kid,
                    "x": enc(&point[1..33]), "y": enc(&point[33..]),
                }),
                PublicKey::Ed25519(x) => json!({
                    "kty": "OKP", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "kid": k.kid,
                    "x": enc(x),
                }),
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Whether a key has id `kid`.
    pub fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }
}

/// What a token must say to be taken.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Expected `iss` (empty: any).
    pub issuer: String,
    /// A value `aud` must hold (empty: any).
    pub audience: String,
    /// Allowed clock difference for `exp` and `nbf`.
    pub skew: Duration,
    /// Claim holding the roles: a name, or a dotted path (`realm_access.roles`); an
    /// array of strings or a space-separated string (`scope`).
    pub roles_claim: String,
}

/// A verified token's principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `sub`.
    pub subject: String,
    /// The roles claim's values.
    pub roles: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
}

fn part(token: &str, what: &str, s: &str) -> Result<Vec<u8>, TokenError> {
    let _ = token;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| TokenError::Malformed(format!("{what} is not base64url: {e}")))
}

fn roles(claims: &Value, path: &str) -> Vec<String> {
    let mut v = claims;
    for step in path.split('.') {
        match v.get(step) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Value::String(s) => s.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    }
}

/// Checks `token`'s signature against `keys` and its claims against `rules` at `now`
/// (seconds since the epoch).
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &Validation,
    now: u64,
) -> Result<Verified, TokenError> {
    if token.len() > MAX_TOKEN {
        return Err(TokenError::Malformed(format!(
            "{} bytes, over {MAX_TOKEN}",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not three dot-separated parts".into(),
        ));
    };
    let header: Value = serde_json::from_slice(&part(token, "the header", h)?)
        .map_err(|e| TokenError::Malformed(format!("the header is not JSON: {e}")))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let (params, fits): (
        &'static dyn signature::VerificationAlgorithm,
        fn(&PublicKey) -> bool,
    ) = match alg {
        "RS256" => (&signature::RSA_PKCS1_2048_8192_SHA256, |k| {
            matches!(k, PublicKey::Rsa { .. })
        }),
        "ES256" => (&signature::ECDSA_P256_SHA256_FIXED, |k| {
            matches!(k, PublicKey::P256(_))
        }),
        "EdDSA" => (&signature::ED25519, |k| matches!(k, PublicKey::Ed25519(_))),
        other => return Err(TokenError::Algorithm(other.chars().take(32).collect())),
    };
    let kid = header.get("kid").and_then(Value::as_str);
    let sig = part(token, "the signature", s)?;
    let signed = &token.as_bytes()[..h.len() + 1 + c.len()];
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|k| fits(&k.key) && kid.is_none_or(|id| k.kid == id))
        .collect();
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey(
            kid.unwrap_or("(none)").chars().take(64).collect(),
        ));
    }
    let ok = candidates.iter().any(|k| match &k.key {
        PublicKey::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
            .is_ok(),
        PublicKey::P256(point) | PublicKey::Ed25519(point) => {
            signature::UnparsedPublicKey::new(params, point)
                .verify(signed, &sig)
                .is_ok()
        }
    });
    if !ok {
        return Err(TokenError::Signature);
    }
    let claims: Value = serde_json::from_slice(&part(token, "the claims", c)?)
        .map_err(|e| TokenError::Malformed(format!("the claims are not JSON: {e}")))?;
    let skew = rules.skew.as_secs();
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(TokenError::NoExpiry)?;
    if now > exp.saturating_add(skew) {
        return Err(TokenError::Expired(now - exp));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        if nbf > now.saturating_add(skew) {
            return Err(TokenError::NotYetValid(nbf - now));
        }
    }
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if !rules.issuer.is_empty() && iss != rules.issuer {
        return Err(TokenError::Issuer(iss.chars().take(200).collect()));
    }
    if !rules.audience.is_empty() {
        let held = match claims.get("aud") {
            Some(Value::String(a)) => *a == rules.audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&rules.audience)),
            _ => false,
        };
        if !held {
            return Err(TokenError::Audience(rules.audience.clone()));
        }
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::NoSubject)?
        .to_string();
    Ok(Verified {
        subject,
        roles: roles(&claims, &rules.roles_claim),
        expires: exp,
    })
}

/// A private key tokens are signed with.
pub enum Signer {
    /// ECDSA P-256 with SHA-256 (what the built-in issuer makes).
    Es256(signature::EcdsaKeyPair),
    /// Ed25519.
    EdDsa(signature::Ed25519KeyPair),
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256(signature::RsaKeyPair),
}

impl Signer {
    /// A new ES256 key; its PKCS#8 form (to keep it) beside it.
    pub fn generate_es256() -> Result<(Self, Vec<u8>), String> {
        let rng = ring::rand::SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .map_err(|_| "cannot generate a P-256 key")?;
        let key = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|e| format!("P-256 key: {e}"))?;
        Ok((Self::Es256(key), pkcs8.as_ref().to_vec()))
    }

    /// The ES256 key of a PKCS#8 document made by [`Signer::generate_es256`].
    pub fn es256_from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &rng,
        )
        .map(Self::Es256)
        .map_err(|e| format!("P-256 key: {e}"))
    }

    /// A new Ed25519 key.
    pub fn generate_ed25519() -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "cannot generate an Ed25519 key")?;
        signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map(Self::EdDsa)
            .map_err(|e| format!("Ed25519 key: {e}"))
    }

    /// An RSA key from PKCS#8 DER.
    pub fn rs256_from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        signature::RsaKeyPair::from_pkcs8(pkcs8)
            .map(Self::Rs256)
            .map_err(|e| format!("RSA key: {e}"))
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Es256(_) => "ES256",
            Self::EdDsa(_) => "EdDSA",
            Self::Rs256(_) => "RS256",
        }
    }

    /// Its public half as a key-set entry with id `kid`.
    pub fn jwk(&self, kid: &str) -> Jwk {
        let key = match self {
            Self::Es256(k) => PublicKey::P256(k.public_key().as_ref().to_vec()),
            Self::EdDsa(k) => PublicKey::Ed25519(k.public_key().as_ref().to_vec()),
            Self::Rs256(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                PublicKey::Rsa { n: c.n, e: c.e }
            }
        };
        Jwk {
            kid: kid.to_string(),
            key,
        }
    }

    /// A token of `claims`, its header naming `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> Result<String, String> {
        let header = json!({ "alg": self.alg(), "typ": "JWT", "kid": kid });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = match self {
            Self::Es256(k) => k
                .sign(&rng, token.as_bytes())
                .map_err(|_| "ES256 signing failed")?
                .as_ref()
                .to_vec(),
            Self::EdDsa(k) => k.sign(token.as_bytes()).as_ref().to_vec(),
            Self::Rs256(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    token.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| "RS256 signing failed")?;
                sig
            }
        };
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(token)
    }
}

#[cfg(test)]
mod tests;
