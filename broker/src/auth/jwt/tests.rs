use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::*;

/// A throwaway 2048-bit RSA key (`openssl genpkey -algorithm RSA -outform DER`), for
/// these tests only.
const RSA_PKCS8: &[u8] = include_bytes!("test-rsa-2048.pk8");

const NOW: u64 = 1_800_000_000;

fn rules() -> Validation {
    Validation {
        issuer: "https://issuer.example".into(),
        audience: "rafka".into(),
        skew: Duration::from_secs(30),
        roles_claim: "roles".into(),
    }
}

fn claims() -> Value {
    json!({
        "iss": "https://issuer.example", "aud": "rafka", "sub": "svc-orders",
        "exp": NOW + 300, "nbf": NOW - 10, "roles": ["writer", "reader"],
    })
}

fn signers() -> Vec<(Signer, &'static str)> {
    vec![
        (Signer::generate_es256().unwrap().0, "ec-1"),
        (Signer::generate_ed25519().unwrap(), "ed-1"),
        (Signer::rs256_from_pkcs8(RSA_PKCS8).unwrap(), "rsa-1"),
    ]
}

#[test]
fn each_algorithm_signs_and_verifies() {
    for (signer, kid) in signers() {
        let keys = KeySet {
            keys: vec![signer.jwk(kid)],
        };
        let token = signer.sign(kid, &claims()).unwrap();
        let v = verify(&token, &keys, &rules(), NOW).unwrap();
        assert_eq!(v.subject, "svc-orders");
        assert_eq!(v.roles, ["writer", "reader"]);
        assert_eq!(v.expires, NOW + 300);
        // The set survives its JSON form (what JWKS endpoints serve).
        let again = KeySet::parse(keys.to_json().to_string().as_bytes()).unwrap();
        assert_eq!(again, keys);
        assert!(verify(&token, &again, &rules(), NOW).is_ok());
    }
}

#[test]
fn claims_are_checked() {
    let (signer, _) = Signer::generate_es256().unwrap();
    let keys = KeySet {
        keys: vec![signer.jwk("k")],
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        signer.sign("k", &c).unwrap()
    };
    let check = |token: String| verify(&token, &keys, &rules(), NOW);
    assert_eq!(
        check(with(&|c| c["exp"] = json!(NOW - 31))),
        Err(TokenError::Expired(31))
    );
    // Within the skew.
    assert!(check(with(&|c| c["exp"] = json!(NOW - 29))).is_ok());
    assert_eq!(
        check(with(&|c| c["nbf"] = json!(NOW + 60))),
        Err(TokenError::NotYetValid(60))
    );
    assert_eq!(
        check(with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        })),
        Err(TokenError::NoExpiry)
    );
    assert!(matches!(
        check(with(&|c| c["iss"] = json!("https://evil.example"))),
        Err(TokenError::Issuer(_))
    ));
    assert!(matches!(
        check(with(&|c| c["aud"] = json!("other"))),
        Err(TokenError::Audience(_))
    ));
    assert!(check(with(&|c| c["aud"] = json!(["other", "rafka"]))).is_ok());
    assert_eq!(
        check(with(&|c| c["sub"] = json!(""))),
        Err(TokenError::NoSubject)
    );
}

#[test]
fn signatures_keys_and_algorithms_are_checked() {
    let (signer, _) = Signer::generate_es256().unwrap();
    let (other, _) = Signer::generate_es256().unwrap();
    let keys = KeySet {
        keys: vec![signer.jwk("k")],
    };
    let token = signer.sign("k", &claims()).unwrap();
    // Claims changed after signing.
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    assert_eq!(
        verify(&forged, &keys, &rules(), NOW),
        Err(TokenError::Signature)
    );
    // Signed by a key not in the set under the same kid.
    let token2 = other.sign("k", &claims()).unwrap();
    assert_eq!(
        verify(&token2, &keys, &rules(), NOW),
        Err(TokenError::Signature)
    );
    // A kid the set does not have (a removed key).
    let token3 = signer.sign("gone", &claims()).unwrap();
    assert_eq!(
        verify(&token3, &keys, &rules(), NOW),
        Err(TokenError::UnknownKey("gone".into()))
    );
    // alg none, and HMAC, whatever the signature.
    for alg in ["none", "HS256"] {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k"}).to_string());
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let t = format!("{header}.{body}.");
        assert_eq!(
            verify(&t, &keys, &rules(), NOW),
            Err(TokenError::Algorithm(alg.into()))
        );
    }
    // An RS256 header over the set's EC key: no key of that type.
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "k"}).to_string());
    let t = format!("{header}.{}.{}", parts[1], parts[2]);
    assert!(matches!(
        verify(&t, &keys, &rules(), NOW),
        Err(TokenError::UnknownKey(_))
    ));
    // Garbage.
    for g in ["", "abc", "a.b.c", "a.b.c.d", "!!.??.**"] {
        assert!(
            matches!(
                verify(g, &keys, &rules(), NOW),
                Err(TokenError::Malformed(_))
            ),
            "{g}"
        );
    }
    let huge = "a".repeat(MAX_TOKEN + 1);
    assert!(matches!(
        verify(&huge, &keys, &rules(), NOW),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn roles_come_from_the_configured_claim() {
    let (signer, _) = Signer::generate_es256().unwrap();
    let keys = KeySet {
        keys: vec![signer.jwk("k")],
    };
    let mut c = claims();
    c["scope"] = json!("topics.read topics.write");
    c["realm_access"] = json!({"roles": ["ops"]});
    let token = signer.sign("k", &c).unwrap();
    let scope = Validation {
        roles_claim: "scope".into(),
        ..rules()
    };
    assert_eq!(
        verify(&token, &keys, &scope, NOW).unwrap().roles,
        ["topics.read", "topics.write"]
    );
    let nested = Validation {
        roles_claim: "realm_access.roles".into(),
        ..rules()
    };
    assert_eq!(verify(&token, &keys, &nested, NOW).unwrap().roles, ["ops"]);
}

#[test]
fn key_sets_skip_what_they_cannot_use_and_refuse_broken_keys() {
    let doc = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"},
        {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"},
    ]});
    assert_eq!(KeySet::parse(doc.to_string().as_bytes()).unwrap().keys, []);
    let broken = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]});
    assert!(KeySet::parse(broken.to_string().as_bytes()).is_err());
    assert!(KeySet::parse(b"not json").is_err());
    assert!(KeySet::parse(b"{}").is_err());
}
