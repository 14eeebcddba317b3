//! Checking an id_token as OpenID Connect Core 1.0 §3.1.3.7 asks: the issuer, the audience (and `azp`
//! when there are several), the expiry with a small allowance for clock skew, the nonce the
//! authorization request carried, and the signature against the provider's published keys (JWKS) when
//! the provider publishes them.
//!
//! §3.1.3.7 lets a client that received the token directly from the token endpoint over TLS skip the
//! signature; the broker checks it whenever a `jwks_uri` is known, so a token that was tampered with
//! on the way, or minted by someone holding another key, is refused. Without published keys the other
//! checks still apply. Pure functions over bytes: they never panic and bound what they read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::signature;
use serde_json::{Map, Value};

/// Larger id_tokens are refused unread (real ones are one or two kilobytes).
pub const MAX_ID_TOKEN_BYTES: usize = 64 * 1024;
/// How far the provider's clock may be ahead of ours before `exp` is held against it.
pub const CLOCK_SKEW_SECS: i64 = 120;
/// Keys beyond this many in a JWKS are ignored (a real set holds a handful).
const MAX_KEYS: usize = 50;

/// The claims of an id_token the broker reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub subject: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub email: Option<String>,
    pub nonce: Option<String>,
    pub issuer: Option<String>,
    /// `aud`, as a list whether it came as a string or an array.
    pub audience: Vec<String>,
    pub authorized_party: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: Option<i64>,
}

/// What an id_token must match.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// The issuer identifier: the discovery document's `issuer`, or the catalogue's.
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce the authorization request carried.
    pub nonce: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// The provider's signing keys, when it publishes them: then the signature must verify.
    pub keys: Option<&'a Jwks>,
}

/// Reads an id_token and checks it; the error says which check failed, in words for people.
pub fn check_id_token(token: &str, expect: &Expectations<'_>) -> Result<IdTokenClaims, String> {
    let parts = split(token)?;
    let claims = read_claims(parts.payload)?;
    check_claims(&claims, expect)?;
    if let Some(keys) = expect.keys {
        let header = decode_object(parts.header, "header")?;
        verify_signature(&parts, &header, keys)?;
    }
    Ok(claims)
}

/// Reads an id_token's claims without checking anything (tests and diagnostics).
pub fn read_id_token(token: &str) -> Result<IdTokenClaims, String> {
    read_claims(split(token)?.payload)
}

struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, String> {
    if token.len() > MAX_ID_TOKEN_BYTES {
        return Err("the id_token is too large".into());
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok(Parts {
            header,
            payload,
            signature,
        }),
        _ => Err("the id_token is not a signed JWT (three dot-separated parts)".into()),
    }
}

fn decode(part: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| format!("the id_token {what} is not base64url"))
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(&decode(part, what)?) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(format!("the id_token {what} is not a JSON object")),
    }
}

fn read_claims(payload: &str) -> Result<IdTokenClaims, String> {
    let claims = decode_object(payload, "payload")?;
    let claim = |k: &str| match claims.get(k) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Some(s.clone()),
        Some(Value::Number(n)) if k == "sub" => Some(n.to_string()),
        _ => None,
    };
    let audience = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .take(20)
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok(IdTokenClaims {
        subject: claim("sub"),
        name: claim("name"),
        preferred_username: claim("preferred_username"),
        email: claim("email"),
        nonce: claim("nonce"),
        issuer: claim("iss"),
        audience,
        authorized_party: claim("azp"),
        expires_at: super::token_response::seconds(claims.get("exp")),
    })
}

fn check_claims(claims: &IdTokenClaims, expect: &Expectations<'_>) -> Result<(), String> {
    let trim = |s: &str| s.trim_end_matches('/').to_string();
    match claims.issuer.as_deref() {
        Some(iss) if trim(iss) == trim(expect.issuer) => {}
        Some(iss) => {
            return Err(format!(
                "the id_token was issued by {:?}, not by {:?}",
                super::error::tidy(iss, 200),
                expect.issuer
            ))
        }
        None => return Err("the id_token names no issuer (iss)".into()),
    }
    if !claims.audience.iter().any(|a| a == expect.client_id) {
        return Err("the id_token is not meant for this app (its aud lacks the client id)".into());
    }
    let azp_ok = claims
        .authorized_party
        .as_deref()
        .map_or(claims.audience.len() == 1, |azp| azp == expect.client_id);
    if !azp_ok {
        return Err("the id_token names several audiences but not this app as azp".into());
    }
    match claims.expires_at {
        Some(exp) if exp + CLOCK_SKEW_SECS > expect.now.timestamp() => {}
        Some(_) => return Err("the id_token has expired".into()),
        None => return Err("the id_token has no expiry (exp)".into()),
    }
    if let Some(expected) = expect.nonce {
        if claims.nonce.as_deref() != Some(expected) {
            return Err("the id_token's nonce does not match the authorization request's".into());
        }
    }
    Ok(())
}

/// A provider's published signing keys (RFC 7517), the usable ones only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`, and the curve.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Jwks {
    /// Reads a JWKS document; keys of unknown types, or for encryption only, are skipped.
    pub fn parse(doc: &Map<String, Value>) -> Result<Self, String> {
        let Some(Value::Array(items)) = doc.get("keys") else {
            return Err("the JWKS has no keys array".into());
        };
        let keys: Vec<Jwk> = items
            .iter()
            .take(MAX_KEYS)
            .filter_map(Value::as_object)
            .filter(|k| {
                k.get("use")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u == "sig")
            })
            .filter_map(read_jwk)
            .collect();
        if keys.is_empty() {
            return Err("the JWKS holds no signing key the broker can use".into());
        }
        Ok(Self { keys })
    }
}

fn read_jwk(k: &Map<String, Value>) -> Option<Jwk> {
    let field = |name: &str| {
        k.get(name)
            .and_then(Value::as_str)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
    };
    let key = match (
        k.get("kty")?.as_str()?,
        k.get("crv").and_then(Value::as_str),
    ) {
        ("RSA", _) => PublicKey::Rsa {
            n: field("n")?,
            e: field("e")?,
        },
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let curve = if crv == "P-256" {
                Curve::P256
            } else {
                Curve::P384
            };
            let mut point = vec![0x04];
            point.extend(field("x")?);
            point.extend(field("y")?);
            PublicKey::Ec { curve, point }
        }
        ("OKP", Some("Ed25519")) => PublicKey::Ed25519 { x: field("x")? },
        _ => return None,
    };
    Some(Jwk {
        kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
        key,
    })
}

fn verify_signature(
    parts: &Parts<'_>,
    header: &Map<String, Value>,
    keys: &Jwks,
) -> Result<(), String> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    let kid = header.get("kid").and_then(Value::as_str);
    let message = format!("{}.{}", parts.header, parts.payload);
    let sig = decode(parts.signature, "signature")?;
    let candidates = keys
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid);
    let mut supported = false;
    for jwk in candidates {
        let Some(ok) = verify_with(alg, &jwk.key, message.as_bytes(), &sig) else {
            continue;
        };
        supported = true;
        if ok {
            return Ok(());
        }
    }
    if supported {
        Err("the id_token's signature does not verify against the provider's keys".into())
    } else {
        Err(format!(
            "the id_token is signed with {:?}, for which the provider publishes no usable key",
            super::error::tidy(alg, 20)
        ))
    }
}

/// `None` when the key cannot check this algorithm; `Some(valid)` otherwise. Symmetric and `none`
/// algorithms are never accepted: a published key set means the provider signs asymmetrically.
fn verify_with(alg: &str, key: &PublicKey, message: &[u8], sig: &[u8]) -> Option<bool> {
    let ok = match (alg, key) {
        ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", PublicKey::Rsa { n, e }) => {
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                _ => &signature::RSA_PSS_2048_8192_SHA512,
            };
            signature::RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok()
        }
        (
            "ES256",
            PublicKey::Ec {
                curve: Curve::P256,
                point,
            },
        ) => signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(message, sig)
            .is_ok(),
        (
            "ES384",
            PublicKey::Ec {
                curve: Curve::P384,
                point,
            },
        ) => signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
            .verify(message, sig)
            .is_ok(),
        ("EdDSA", PublicKey::Ed25519 { x }) => {
            signature::UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok()
        }
        _ => return None,
    };
    Some(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.com";

    fn key_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn jwks_of(pair: &EcdsaKeyPair, kid: &str) -> Jwks {
        let point = pair.public_key().as_ref();
        let doc = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}]});
        Jwks::parse(doc.as_object().unwrap()).unwrap()
    }

    fn sign(pair: &EcdsaKeyPair, kid: &str, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": kid}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{payload}");
        let sig = pair.sign(&SystemRandom::new(), message.as_bytes()).unwrap();
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn claims(now: DateTime<Utc>) -> Value {
        json!({"iss": ISSUER, "aud": "app", "sub": "u1", "nonce": "n1", "exp": now.timestamp() + 300})
    }

    fn expect<'a>(now: DateTime<Utc>, keys: Option<&'a Jwks>) -> Expectations<'a> {
        Expectations {
            issuer: ISSUER,
            client_id: "app",
            nonce: Some("n1"),
            now,
            keys,
        }
    }

    #[test]
    fn a_good_signed_token_passes_and_each_bad_claim_is_named() {
        let now = Utc::now();
        let pair = key_pair();
        let keys = jwks_of(&pair, "k1");
        let good = sign(&pair, "k1", &claims(now));
        let read = check_id_token(&good, &expect(now, Some(&keys))).unwrap();
        assert_eq!(read.subject.as_deref(), Some("u1"));

        let bad = |change: &dyn Fn(&mut Value), needle: &str| {
            let mut c = claims(now);
            change(&mut c);
            let e = check_id_token(&sign(&pair, "k1", &c), &expect(now, Some(&keys))).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        bad(
            &|c| c["iss"] = json!("https://evil.example.com"),
            "issued by",
        );
        bad(&|c| c["aud"] = json!("another-app"), "aud");
        bad(&|c| c["aud"] = json!(["app", "other"]), "azp");
        bad(
            &|c| c["exp"] = json!(now.timestamp() - CLOCK_SKEW_SECS - 1),
            "expired",
        );
        bad(&|c| c["nonce"] = json!("n2"), "nonce");
        bad(
            &|c| {
                c.as_object_mut().unwrap().remove("exp");
            },
            "no expiry",
        );
        // Within the skew allowance, a just-expired token is still fine.
        let mut c = claims(now);
        c["exp"] = json!(now.timestamp() - 10);
        assert!(check_id_token(&sign(&pair, "k1", &c), &expect(now, Some(&keys))).is_ok());
    }

    #[test]
    fn signatures_are_checked_against_the_published_keys() {
        let now = Utc::now();
        let pair = key_pair();
        let keys = jwks_of(&pair, "k1");
        let other = key_pair();
        let forged = sign(&other, "k1", &claims(now));
        let e = check_id_token(&forged, &expect(now, Some(&keys))).unwrap_err();
        assert!(e.contains("signature does not verify"), "{e}");
        // Without published keys the claims are still checked, the signature is not.
        assert!(check_id_token(&forged, &expect(now, None)).is_ok());

        let good = sign(&pair, "k1", &claims(now));
        let mut parts: Vec<&str> = good.split('.').collect();
        let tampered_payload = URL_SAFE_NO_PAD.encode(
            json!({"iss": ISSUER, "aud": "app", "sub": "admin", "nonce": "n1", "exp": now.timestamp() + 300}).to_string(),
        );
        parts[1] = &tampered_payload;
        let e = check_id_token(&parts.join("."), &expect(now, Some(&keys))).unwrap_err();
        assert!(e.contains("signature"), "{e}");

        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(now).to_string())
        );
        let e = check_id_token(&unsigned, &expect(now, Some(&keys))).unwrap_err();
        assert!(e.contains("\"none\""), "{e}");
        assert!(check_id_token("a.b", &expect(now, None)).is_err());
    }

    #[test]
    fn jwks_documents_without_usable_keys_are_refused() {
        let doc = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]});
        assert!(Jwks::parse(doc.as_object().unwrap()).is_err());
        assert!(Jwks::parse(json!({}).as_object().unwrap()).is_err());
    }
}
