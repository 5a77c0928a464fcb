//! Access tokens: where a request presents one, how a hub verifies it, and what it grants.
//!
//! Both generations of the protocol: the draft's JWT access tokens (RFC 9068: `typ` `at+jwt`,
//! `iss`, `aud` and `exp` required, grants in `authorization_details`) and the pre-standard
//! tokens (grants in the `mercure` claim's `publish` and `subscribe` selector lists). The
//! algorithm is the key's, never the token's; `none` is never accepted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use url::Url;

use super::matcher::{MatchType, Matcher};

/// The `type` of the draft's Mercure authorization details.
pub const AUTHORIZATION_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// The draft's recommended cookie for a subscriber's token.
pub const COOKIE: &str = "__Secure-mercure_access_token";
/// The pre-standard cookie.
pub const PRE_STANDARD_COOKIE: &str = "mercureAuthorization";

/// The most Mercure authorization details, and topic matchers over all of them, a token may
/// carry; past either, the whole token is refused.
const MAX_DETAILS: usize = 100;
const MAX_MATCHERS: usize = 100;

/// A key that verifies access tokens, with the one algorithm it verifies.
#[derive(Clone)]
pub struct TokenKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

impl TokenKey {
    /// A shared secret, for HS256 (Mercure's `MERCURE_PUBLISHER_JWT_KEY` and
    /// `MERCURE_SUBSCRIBER_JWT_KEY` hold one).
    pub fn hmac(secret: &[u8]) -> Self {
        Self {
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
        }
    }

    /// An RSA public key in PEM, for RS256.
    pub fn rsa_pem(pem: &[u8]) -> Result<Self, TokenError> {
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|error| TokenError::Key(format!("not an RSA public key in PEM: {error}")))?;
        Ok(Self {
            key,
            algorithm: Algorithm::RS256,
        })
    }

    /// A P-256 public key in PEM, for ES256.
    pub fn ec_pem(pem: &[u8]) -> Result<Self, TokenError> {
        let key = DecodingKey::from_ec_pem(pem)
            .map_err(|error| TokenError::Key(format!("not an EC public key in PEM: {error}")))?;
        Ok(Self {
            key,
            algorithm: Algorithm::ES256,
        })
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a request's token does not let it through; each maps to its RFC 6750 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// No token where one is needed: `401` with a bare challenge.
    Missing,
    /// A token that fails verification (signature, `typ`, algorithm, `exp`, `nbf`, `aud`,
    /// `iss`, or its grants): `401`, `error="invalid_token"`. The reason is for logs only.
    Invalid(String),
    /// A valid token without the grant the operation needs: `403`,
    /// `error="insufficient_scope"`.
    InsufficientScope,
    /// A malformed presentation (an `Authorization` header that is not one `Bearer` token):
    /// `400`, `error="invalid_request"`.
    BadRequest(String),
    /// A key that could not be read (a configuration error, not a request's).
    Key(String),
}

impl TokenError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing | Self::Invalid(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Key(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3), pointing at the hub's protected
    /// resource metadata when there is a URL for it. `None` for a configuration error.
    pub fn challenge(&self, resource_metadata: Option<&str>) -> Option<HeaderValue> {
        let error = match self {
            Self::Missing => None,
            Self::Invalid(_) => Some("invalid_token"),
            Self::InsufficientScope => Some("insufficient_scope"),
            Self::BadRequest(_) => Some("invalid_request"),
            Self::Key(_) => return None,
        };
        let mut attributes = Vec::new();
        if let Some(error) = error {
            attributes.push(format!("error=\"{error}\""));
        }
        // A URL with a quote or a backslash would break the quoted string: left out.
        if let Some(url) = resource_metadata.filter(|url| !url.contains(['"', '\\'])) {
            attributes.push(format!("resource_metadata=\"{url}\""));
        }
        let value = if attributes.is_empty() {
            "Bearer".to_owned()
        } else {
            format!("Bearer {}", attributes.join(", "))
        };
        HeaderValue::from_str(&value).ok()
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("an access token is required"),
            Self::Invalid(why) => write!(f, "invalid access token: {why}"),
            Self::InsufficientScope => f.write_str("the access token does not grant this"),
            Self::BadRequest(why) => write!(f, "malformed access token presentation: {why}"),
            Self::Key(why) => write!(f, "token key: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

/// The token a request presents: its `Authorization: Bearer` header (which, when present, wins
/// and must be well formed), else the first of `cookies` it carries. `None` without either.
///
/// ```
/// use http::HeaderMap;
/// use tower_sse::mercure::{presented_token, COOKIE};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("cookie", format!("theme=dark; {COOKIE}=abc.def.ghi").parse()?);
/// assert_eq!(presented_token(&headers, &[COOKIE])?.as_deref(), Some("abc.def.ghi"));
/// headers.insert("authorization", "Bearer xyz.uvw.rst".parse()?);
/// assert_eq!(presented_token(&headers, &[COOKIE])?.as_deref(), Some("xyz.uvw.rst"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn presented_token(
    headers: &HeaderMap,
    cookies: &[&str],
) -> Result<Option<String>, TokenError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        if authorization.next().is_some() {
            return Err(TokenError::BadRequest(
                "more than one Authorization header".into(),
            ));
        }
        let value = value
            .to_str()
            .map_err(|_| TokenError::BadRequest("Authorization is not visible ASCII".into()))?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty() && !token.contains(' '))
            .ok_or_else(|| {
                TokenError::BadRequest("Authorization is not one Bearer token".into())
            })?;
        return Ok(Some(token.to_owned()));
    }
    for name in cookies {
        let found =
            crate::headers::list_separated(headers, &header::COOKIE, ';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key.trim() == *name).then(|| value.trim().trim_matches('"').to_owned())
            });
        if let Some(token) = found.filter(|token| !token.is_empty()) {
            return Ok(Some(token));
        }
    }
    Ok(None)
}

/// How a hub verifies access tokens.
///
/// ```
/// use tower_sse::mercure::{TokenKey, Verifier};
///
/// let hub = url::Url::parse("https://example.com/.well-known/mercure")?;
/// // Draft tokens: `iss` must be `https://example.com` (the hub's origin, by default) and `aud`
/// // must name the hub's URL; pre-standard tokens are accepted too.
/// let verifier = Verifier::new(TokenKey::hmac(b"a secret of at least 256 bits, really"), hub)
///     .pre_standard(true);
/// assert!(verifier.verify("not.a.token").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<TokenKey>,
    hub: Url,
    issuer: String,
    audience: String,
    pre_standard: bool,
}

impl Verifier {
    /// Verifies with `key` for a hub at `hub`: draft tokens must be issued by the hub URL's
    /// origin and name the hub URL as their audience (see [`issuer`](Self::issuer) and
    /// [`audience`](Self::audience)); pre-standard tokens are refused unless
    /// [`pre_standard`](Self::pre_standard) allows them.
    pub fn new(key: TokenKey, hub: Url) -> Self {
        let issuer = hub.origin().ascii_serialization();
        let audience = hub.as_str().to_owned();
        Self {
            keys: vec![key],
            hub,
            issuer,
            audience,
            pre_standard: false,
        }
    }

    /// Also verifies with `key` (for a key rotation): a token is checked with each key whose
    /// algorithm its header names.
    #[must_use]
    pub fn key(mut self, key: TokenKey) -> Self {
        self.keys.push(key);
        self
    }

    /// The trusted issuer: a draft token's `iss` must equal it.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The hub's resource identifier: a draft token's `aud` must contain it.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Whether pre-standard tokens (grants in the `mercure` claim, `exp` optional, no `aud`
    /// or `iss`) are accepted beside the draft's (default: no).
    #[must_use]
    pub fn pre_standard(mut self, accept: bool) -> Self {
        self.pre_standard = accept;
        self
    }

    /// Verifies `token` and reads its grants.
    pub fn verify(&self, token: &str) -> Result<Grants, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| TokenError::Invalid(format!("header: {error}")))?;
        let draft = header.typ.as_deref().is_some_and(|typ| {
            let typ = typ.to_ascii_lowercase();
            typ == "at+jwt" || typ == "application/at+jwt"
        });
        if !draft && !self.pre_standard {
            return Err(TokenError::Invalid("typ is not at+jwt".into()));
        }
        let mut last_error = TokenError::Invalid(format!("no key for {:?}", header.alg));
        for key in self.keys.iter().filter(|key| key.algorithm == header.alg) {
            let mut validation = Validation::new(key.algorithm);
            validation.leeway = 0;
            validation.validate_nbf = true;
            if draft {
                validation.required_spec_claims =
                    HashSet::from(["exp", "aud", "iss"].map(str::to_owned));
                validation.set_audience(&[self.audience.as_str()]);
                validation.set_issuer(&[self.issuer.as_str()]);
            } else {
                // Pre-standard: `exp` is checked when present.
                validation.required_spec_claims = HashSet::new();
                validation.validate_aud = false;
            }
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                // `iss` is one string equal to the issuer (a list naming it is not).
                Ok(data)
                    if draft
                        && data.claims.get("iss").and_then(Value::as_str)
                            != Some(self.issuer.as_str()) =>
                {
                    last_error = TokenError::Invalid("iss is not the trusted issuer".into());
                }
                Ok(data) => {
                    return if draft {
                        Grants::of_draft(&data.claims, &self.hub)
                    } else {
                        Grants::of_pre_standard(&data.claims, &self.hub)
                    }
                }
                Err(error) => last_error = TokenError::Invalid(error.to_string()),
            }
        }
        Err(last_error)
    }
}

/// What a verified token grants: the topics its holder may publish to and subscribe to (a
/// private update reaches it only through these), and when it expires.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    publish: Vec<Arc<Matcher>>,
    subscribe: Vec<SubscribeGrant>,
    /// The pre-standard `mercure.payload`, for every subscription.
    payload: Option<Value>,
    expires: Option<SystemTime>,
}

/// A subscribe grant, with the payload the draft attaches to its subscriptions.
#[derive(Debug, Clone)]
struct SubscribeGrant {
    matcher: Arc<Matcher>,
    payload: Option<Value>,
}

impl Grants {
    /// No grant at all (an anonymous subscriber).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether the token lets its holder publish on `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|matcher| matcher.matches(topic))
    }

    /// Whether the token lets its holder receive private updates of `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe
            .iter()
            .any(|grant| grant.matcher.matches(topic))
    }

    /// The payload of a subscription's events: the draft's, of the first subscribe grant
    /// that names `subscription` (the subscription's own matcher string, read as a topic); the
    /// pre-standard `mercure.payload`, for every subscription.
    pub fn payload_for(&self, subscription: &str) -> Option<&Value> {
        self.subscribe
            .iter()
            .find(|grant| grant.matcher.matches(subscription))
            .and_then(|grant| grant.payload.as_ref())
            .or(self.payload.as_ref())
    }

    /// When the token expires (its `exp`), if it does: a subscriber's stream ends then.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires
    }

    /// The draft's grants: every Mercure authorization detail, each well formed, or none.
    fn of_draft(claims: &Value, hub: &Url) -> Result<Self, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(format!("authorization_details: {why}"));
        let mut grants = Self {
            expires: expiry(claims),
            ..Self::default()
        };
        let details = match claims.get("authorization_details") {
            None => return Ok(grants),
            Some(Value::Array(details)) => details,
            Some(_) => return Err(invalid("not an array")),
        };
        let mercure = details.iter().filter(|detail| {
            detail.get("type").and_then(Value::as_str) == Some(AUTHORIZATION_DETAIL_TYPE)
        });
        let (mut count, mut matchers) = (0, 0);
        for detail in mercure {
            count += 1;
            if count > MAX_DETAILS {
                return Err(invalid("too many"));
            }
            let actions = match detail.get("actions") {
                Some(Value::Array(actions)) if !actions.is_empty() => actions,
                _ => return Err(invalid("actions is not a non-empty array")),
            };
            let mut publish = false;
            let mut subscribe = false;
            for action in actions {
                match action.as_str() {
                    Some("publish") => publish = true,
                    Some("subscribe") => subscribe = true,
                    // Unknown actions grant nothing.
                    Some(_) => {}
                    None => return Err(invalid("an action is not a string")),
                }
            }
            let topics = match detail.get("topics") {
                Some(Value::Array(topics)) if !topics.is_empty() => topics,
                _ => return Err(invalid("topics is not a non-empty array")),
            };
            let payload = match detail.get("payload") {
                None => None,
                Some(payload @ Value::Object(_)) => Some(payload.clone()),
                Some(_) => return Err(invalid("payload is not an object")),
            };
            for topic in topics {
                matchers += 1;
                if matchers > MAX_MATCHERS {
                    return Err(invalid("too many topic matchers"));
                }
                let pattern = topic
                    .get("match")
                    .and_then(Value::as_str)
                    .filter(|pattern| !pattern.is_empty())
                    .ok_or_else(|| invalid("a topic has no match"))?;
                let kind = match topic.get("match_type") {
                    None => MatchType::Exact,
                    Some(Value::String(kind)) if kind == "exact" => MatchType::Exact,
                    Some(Value::String(kind)) if kind == "urlpattern" => MatchType::UrlPattern,
                    Some(_) => return Err(invalid("unknown match_type")),
                };
                // Checked whatever the actions: a malformed matcher refuses the whole token.
                let matcher = Arc::new(
                    Matcher::new(kind, pattern, hub)
                        .map_err(|error| invalid(&error.to_string()))?,
                );
                if publish {
                    grants.publish.push(matcher.clone());
                }
                if subscribe {
                    grants.subscribe.push(SubscribeGrant {
                        matcher,
                        payload: payload.clone(),
                    });
                }
            }
        }
        Ok(grants)
    }

    /// The pre-standard grants: the `mercure` claim's `publish` and `subscribe` selectors, and
    /// its `payload` for every subscription.
    fn of_pre_standard(claims: &Value, hub: &Url) -> Result<Self, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(format!("mercure claim: {why}"));
        let mercure = match claims.get("mercure") {
            Some(Value::Object(mercure)) => mercure,
            _ => return Err(invalid("missing")),
        };
        let selectors = |name: &str| -> Result<Vec<Arc<Matcher>>, TokenError> {
            let list = match mercure.get(name) {
                None | Some(Value::Null) => return Ok(Vec::new()),
                Some(Value::Array(list)) => list,
                Some(_) => return Err(invalid(&format!("{name} is not an array"))),
            };
            if list.len() > MAX_MATCHERS {
                return Err(invalid("too many selectors"));
            }
            list.iter()
                .map(|selector| {
                    let selector = selector
                        .as_str()
                        .ok_or_else(|| invalid("a selector is not a string"))?;
                    Matcher::new(MatchType::Selector, selector, hub)
                        .map(Arc::new)
                        .map_err(|error| invalid(&error.to_string()))
                })
                .collect()
        };
        let subscribe = selectors("subscribe")?
            .into_iter()
            .map(|matcher| SubscribeGrant {
                matcher,
                payload: None,
            })
            .collect();
        Ok(Self {
            publish: selectors("publish")?,
            subscribe,
            payload: mercure.get("payload").filter(|p| !p.is_null()).cloned(),
            expires: expiry(claims),
        })
    }
}

/// The token's `exp`, as a time (a JSON number, whole or not, as the verification read it).
fn expiry(claims: &Value) -> Option<SystemTime> {
    let exp = claims.get("exp")?.as_f64()?;
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(exp).ok()?)
}

#[cfg(test)]
mod tests;
