//! Access tokens: where they come from (the `Authorization: Bearer` header, else the cookie),
//! how they are validated (RFC 9068 JWT access tokens as the Mercure specification profiles
//! them), and what they grant (`authorization_details`).
//!
//! Why `jsonwebtoken`: the most used JWT crate in Rust, maintained, with a pure-Rust crypto
//! backend (`rust_crypto`: HS256, ES256, RS256, EdDSA without a C toolchain); its
//! [`Validation`] checks the signature against an explicit algorithm list (a token's `alg`
//! outside it is refused, `none` is never accepted, and the key's family must fit the
//! algorithm), `exp` (required here), `nbf`, `iss` and `aud` (string or array). The `typ`
//! header, `crit`, and the authorization details are checked here.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::topic::{MatchType, TopicMatcher};

/// The `type` of a Mercure authorization detail.
pub const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// The most authorization details in a token.
pub const MAX_DETAILS: usize = 32;
/// The most topic matchers in one detail.
pub const MAX_DETAIL_TOPICS: usize = 64;
/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A verification key and the algorithms allowed with it.
pub struct Verifier {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// From a configuration value: a PEM public key (RSA: `RS256`, `PS256`; EC: `ES256`,
    /// `ES384`; Ed25519: `EdDSA`), else an HMAC secret (`HS256`).
    pub fn from_config(value: &str) -> Result<Self, String> {
        let pem = value.trim();
        if !pem.starts_with("-----BEGIN") {
            if value.is_empty() {
                return Err("empty key".into());
            }
            return Ok(Self {
                key: DecodingKey::from_secret(value.as_bytes()),
                algorithms: vec![Algorithm::HS256],
            });
        }
        let pem = pem.as_bytes();
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return Ok(Self {
                key,
                algorithms: vec![Algorithm::EdDSA],
            });
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self {
                key,
                algorithms: vec![Algorithm::ES256, Algorithm::ES384],
            });
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                key,
                algorithms: vec![Algorithm::RS256, Algorithm::PS256],
            });
        }
        Err("a PEM value that is neither an RSA, EC nor Ed25519 public key".into())
    }
}

/// Which role a token is checked for: each has its own key (possibly the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

/// How a request's token failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// `400`, `error="invalid_request"`: the `Authorization` header is not a Bearer token.
    Malformed,
    /// `401`, `error="invalid_token"`: any validation failure (which one is not told).
    Invalid,
}

/// How the hub validates tokens.
#[derive(Debug)]
pub struct Auth {
    pub publisher: Verifier,
    pub subscriber: Verifier,
    /// The trusted issuer (`iss` must equal it).
    pub issuer: String,
    /// The hub's resource identifier (`aud` must hold it).
    pub audience: String,
    /// The hub's URL: the base of relative URL patterns.
    pub hub: Url,
    /// The cookie read when there is no `Authorization` header.
    pub cookie: String,
}

/// What a valid token grants.
#[derive(Debug, Clone)]
pub struct Grants {
    publish: Vec<TopicMatcher>,
    subscribe: Vec<TopicMatcher>,
    /// The `subscribe` details' matchers and payloads, in the token's order.
    payloads: Vec<(Vec<TopicMatcher>, Option<Value>)>,
    /// `exp`, in seconds since the Unix epoch.
    pub expires: u64,
}

impl Grants {
    /// Whether the token may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|m| m.matches(topic))
    }

    /// The payload of the first `subscribe` detail that matches a subscription's own matcher
    /// (taken as a topic).
    pub fn payload_for(&self, matcher: &str) -> Option<Value> {
        self.payloads
            .iter()
            .find(|(matchers, _)| matchers.iter().any(|m| m.matches(matcher)))
            .and_then(|(_, payload)| payload.clone())
    }

    /// Whether the token may receive private updates of `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|m| m.matches(topic))
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    authorization_details: Option<Value>,
}

impl Auth {
    /// The request's token: `Authorization: Bearer` (the scheme in any case), else the cookie;
    /// `None` when there is neither. A cookie is ignored when the header is present.
    pub fn token<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a str>, TokenError> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| TokenError::Malformed)?;
            let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
            let token = token.trim();
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                return Err(TokenError::Malformed);
            }
            return Ok(Some(token));
        }
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == self.cookie).then_some(value)
            });
        Ok(cookie.filter(|token| !token.is_empty()))
    }

    /// Validates `token` for `role` and reads its grants.
    pub fn verify(&self, role: Role, token: &str) -> Result<Grants, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let verifier = match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        };
        let mut validation = Validation::new(verifier.algorithms[0]);
        validation.algorithms.clone_from(&verifier.algorithms);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.key, &validation)
            .map_err(|_| TokenError::Invalid)?;
        // RFC 9068: `at+jwt` (or `application/at+jwt`), in any case.
        let typ = data.header.typ.as_deref().unwrap_or_default();
        let typ = match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
            _ => typ,
        };
        if !typ.eq_ignore_ascii_case("at+jwt") {
            return Err(TokenError::Invalid);
        }
        // No extension this hub would have to understand (RFC 7515 §4.1.11).
        if data.header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let (publish, subscribe, payloads) =
            details(data.claims.authorization_details.as_ref(), &self.hub)
                .ok_or(TokenError::Invalid)?;
        Ok(Grants {
            publish,
            subscribe,
            payloads,
            expires: data.claims.exp,
        })
    }
}

/// What the Mercure details of a token grant: `publish` matchers, `subscribe` matchers, and
/// each `subscribe` detail's matchers with its payload.
type Details = (
    Vec<TopicMatcher>,
    Vec<TopicMatcher>,
    Vec<(Vec<TopicMatcher>, Option<Value>)>,
);

/// The grants of the Mercure details; `None` when any detail is malformed or over a limit (no
/// partial acceptance). Details of other types are skipped.
fn details(value: Option<&Value>, hub: &Url) -> Option<Details> {
    let (mut publish, mut subscribe, mut payloads) = (Vec::new(), Vec::new(), Vec::new());
    let Some(value) = value else {
        return Some((publish, subscribe, payloads));
    };
    let details = value.as_array()?;
    if details.len() > MAX_DETAILS {
        return None;
    }
    for detail in details {
        let detail = detail.as_object()?;
        if detail.get("type")?.as_str()? != DETAIL_TYPE {
            continue;
        }
        let actions = detail.get("actions")?.as_array()?;
        let topics = detail.get("topics")?.as_array()?;
        if actions.is_empty() || topics.is_empty() || topics.len() > MAX_DETAIL_TOPICS {
            return None;
        }
        if detail
            .get("payload")
            .is_some_and(|payload| !payload.is_object())
        {
            return None;
        }
        let mut matchers = Vec::with_capacity(topics.len());
        for topic in topics {
            let topic = topic.as_object()?;
            let kind = match topic.get("match_type") {
                None => MatchType::Exact,
                Some(kind) => MatchType::from_name(kind.as_str()?)?,
            };
            let value = topic.get("match")?.as_str()?;
            matchers.push(TopicMatcher::parse(kind, value, hub).ok()?);
        }
        for action in actions {
            match action.as_str()? {
                "publish" => publish.extend(matchers.iter().cloned()),
                "subscribe" => {
                    subscribe.extend(matchers.iter().cloned());
                    payloads.push((matchers.clone(), detail.get("payload").cloned()));
                }
                // Unknown actions grant nothing.
                _ => {}
            }
        }
    }
    Some((publish, subscribe, payloads))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
