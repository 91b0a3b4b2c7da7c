//! SASL on the Kafka listener (SaslHandshake v1, SaslAuthenticate): OAUTHBEARER with
//! the bearer tokens the gRPC API takes (the built-in authorization server's or any
//! configured issuer's), and PLAIN with a client id and secret of the built-in
//! authorization server, which are exchanged for such a token. Either way the
//! connection's principal is the token's, with the token's expiry: the answer tells the
//! client when to authenticate again (KIP-368), and a connection whose token expired
//! is closed at its next request.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::auth::issuer::{Issuer, TokenRequest};
use crate::auth::Principal;
use crate::server::Shared;

/// Longest SASL message taken (a token is a few KiB).
const MAX_AUTH_BYTES: usize = 64 * 1024;

/// Where a connection is in SASL.
#[derive(Debug, Default)]
pub(super) struct Sasl {
    /// The mechanism SaslHandshake chose, until SaslAuthenticate uses it.
    mechanism: Option<Mechanism>,
    /// The authenticated principal.
    pub principal: Option<Arc<Principal>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    OAuthBearer,
    Plain,
}

/// The mechanisms offered (PLAIN only with the built-in authorization server).
fn mechanisms(shared: &Shared) -> Vec<&'static str> {
    match &shared.auth {
        None => Vec::new(),
        Some(a) if a.builtin_issuer() => vec!["OAUTHBEARER", "PLAIN"],
        Some(_) => vec!["OAUTHBEARER"],
    }
}

pub(super) fn handshake(
    shared: &Shared,
    sasl: &mut Sasl,
    r: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let offered = mechanisms(shared);
    let mut out = SaslHandshakeResponse::default().with_mechanisms(
        offered
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect(),
    );
    sasl.mechanism = match r.mechanism.as_str() {
        m if !offered.contains(&m) => None,
        "OAUTHBEARER" => Some(Mechanism::OAuthBearer),
        _ => Some(Mechanism::Plain),
    };
    if sasl.mechanism.is_none() {
        out.error_code = E::UnsupportedSaslMechanism.code();
    }
    out
}

/// The issuer PLAIN exchanges client secrets at.
fn issuer(shared: &Shared) -> &Arc<Issuer> {
    shared.kafka.issuer.get_or_init(|| {
        Issuer::new(
            shared.config.auth.clone(),
            shared.node.clone(),
            shared.tls.is_some(),
        )
    })
}

pub(super) async fn authenticate(
    shared: &Arc<Shared>,
    sasl: &mut Sasl,
    version: i16,
    r: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let mut out = SaslAuthenticateResponse::default();
    let outcome = match (sasl.mechanism.take(), &shared.auth) {
        (None, _) | (_, None) => Err((E::IllegalSaslState, "SaslHandshake first".to_string())),
        (_, _) if r.auth_bytes.len() > MAX_AUTH_BYTES => Err((
            E::SaslAuthenticationFailed,
            format!("a SASL message is at most {MAX_AUTH_BYTES} bytes"),
        )),
        (Some(Mechanism::OAuthBearer), Some(auth)) => match bearer_token(&r.auth_bytes) {
            Some(token) => auth
                .authenticate(Some(format!("Bearer {token}").as_bytes()))
                .map_err(|e| (E::SaslAuthenticationFailed, e)),
            None => Err((
                E::SaslAuthenticationFailed,
                "not an OAUTHBEARER client response (RFC 7628: `n,,\\x01auth=Bearer <token>\\x01\\x01`)"
                    .to_string(),
            )),
        },
        (Some(Mechanism::Plain), Some(auth)) => match plain(&r.auth_bytes) {
            Some((id, secret)) => {
                let request = TokenRequest {
                    grant_type: Some("client_credentials".into()),
                    client_id: Some(id),
                    client_secret: Some(secret),
                    scope: None,
                };
                match issuer(shared).token(request).await {
                    Ok((token, _)) => auth
                        .authenticate(Some(format!("Bearer {token}").as_bytes()))
                        .map_err(|e| (E::SaslAuthenticationFailed, e)),
                    Err(e) => Err((E::SaslAuthenticationFailed, format!("{}: {}", e.error, e.description))),
                }
            }
            None => Err((
                E::SaslAuthenticationFailed,
                "not a PLAIN message (`authzid NUL client-id NUL secret`)".to_string(),
            )),
        },
    };
    match outcome {
        Ok(principal) => {
            tracing::debug!(principal = %principal.name, "kafka connection authenticated");
            if version >= 1 {
                let now = crate::auth::now();
                out.session_lifetime_ms =
                    principal.expires.saturating_sub(now).saturating_mul(1000) as i64;
            }
            sasl.principal = Some(principal);
        }
        Err((code, message)) => {
            tracing::info!("kafka SASL authentication failed: {message}");
            out.error_code = code.code();
            out.error_message = Some(StrBytes::from_string(message));
        }
    }
    out
}

/// The token of an OAUTHBEARER initial client response (RFC 7628 §3.1):
/// `gs2-header \x01 auth=Bearer <token> \x01 [key=value \x01]* \x01`.
fn bearer_token(bytes: &Bytes) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split('\u{1}');
    let gs2 = parts.next()?;
    if !gs2.starts_with("n,") && !gs2.starts_with("y,") {
        return None;
    }
    parts
        .find_map(|kv| kv.strip_prefix("auth="))
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The client id and secret of a PLAIN message (RFC 4616): `authzid \0 authcid \0 passwd`.
fn plain(bytes: &Bytes) -> Option<(String, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (_authzid, id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || id.is_empty() || secret.is_empty() {
        return None;
    }
    Some((id.to_string(), secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauthbearer_and_plain_messages_are_read_and_malformed_ones_refused() {
        let ok = Bytes::from_static(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01");
        assert_eq!(bearer_token(&ok).as_deref(), Some("abc.def.ghi"));
        let with_authzid = Bytes::from_static(b"n,a=user,\x01host=h\x01auth=Bearer t\x01\x01");
        assert_eq!(bearer_token(&with_authzid).as_deref(), Some("t"));
        for bad in [
            &b"auth=Bearer t"[..],
            b"n,,\x01auth=Basic x\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"\xff\xfe",
        ] {
            assert_eq!(bearer_token(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
        assert_eq!(
            plain(&Bytes::from_static(b"\0client\0s3cret")),
            Some(("client".into(), "s3cret".into()))
        );
        for bad in [&b"client\0s3cret"[..], b"\0\0s", b"\0c\0", b"\0c\0s\0x"] {
            assert_eq!(plain(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }
}
