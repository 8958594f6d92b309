//! Bearer-token auth: JWTs carrying a tenant and a role, verified against one of several
//! configured keys picked by `kid` (so keys can rotate), with the algorithm pinned per
//! key so a token can never choose how it is checked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a caller may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read apps, versions, bindings, triggers.
    Viewer,
    /// Also deploy, roll back, bind, route.
    Deployer,
    /// Also delete apps.
    Admin,
    /// Also manage the workers every tenant shares (drain them, see their addresses):
    /// the platform operator's role.
    Operator,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role `{other}`; roles: viewer, deployer, admin, operator"
            )),
        }
    }
}

/// The claims every token must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub role: Role,
    pub iss: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3); identity providers send
/// either. Which value it must hold is checked by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// One verification (and optionally signing) key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `ES256`, `ES384`, `EdDSA`.
    pub algorithm: Algorithm,
    /// HMAC secret (HS*), at least 32 bytes.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// PEM public key (RS*, PS*, ES*, EdDSA) for verification.
    pub public_key_file: Option<PathBuf>,
    /// PEM private key, only where this control plane mints tokens with this key.
    pub private_key_file: Option<PathBuf>,
}

/// The claims of a worker token: which pool it may join. It carries no tenant or role,
/// and its audience is the workers' own, so it never passes as a user token (nor a user
/// token as a worker's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerClaims {
    pub sub: String,
    pub pool: String,
    pub iss: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    /// The audience of worker tokens (default: the API audience + `-workers`).
    #[serde(default)]
    pub worker_audience: Option<String>,
    pub keys: Vec<KeyConfig>,
    /// The key `mint-token` signs with (default: the first key that can sign).
    pub signing_kid: Option<String>,
}

/// The token of an `Authorization: Bearer <token>` value. Auth schemes are
/// case-insensitive (RFC 9110), so `bearer` and `BEARER` work too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("your role `{have:?}` may not do this; it needs `{need:?}`")]
    Forbidden { have: Role, need: Role },
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("key `{kid}`: {reason}")]
    Key { kid: String, reason: String },
    #[error("no key can sign tokens{0}")]
    NoSigner(String),
    #[error("auth needs at least one key")]
    NoKeys,
}

struct VerifyingKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies (and mints) tokens.
pub struct Auth {
    issuer: String,
    audience: String,
    worker_audience: String,
    keys: HashMap<String, VerifyingKey>,
    signer: Option<(String, Algorithm, EncodingKey)>,
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        if config.keys.is_empty() {
            return Err(AuthConfigError::NoKeys);
        }
        let mut keys = HashMap::new();
        let mut signers = Vec::new();
        for k in &config.keys {
            let fail = |reason: String| AuthConfigError::Key {
                kid: k.kid.clone(),
                reason,
            };
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| fail(format!("reading {}: {e}", path.display())))
            };
            let (decoding, encoding) = if is_hmac(k.algorithm) {
                let secret = match (&k.secret, &k.secret_file) {
                    (Some(s), None) => s.as_bytes().to_vec(),
                    (None, Some(path)) => read(path)?,
                    _ => return Err(fail("set exactly one of `secret`, `secret_file`".into())),
                };
                if secret.len() < 32 {
                    return Err(fail("an HMAC secret needs at least 32 bytes".into()));
                }
                (
                    DecodingKey::from_secret(&secret),
                    Some(EncodingKey::from_secret(&secret)),
                )
            } else {
                if k.secret.is_some() || k.secret_file.is_some() {
                    return Err(fail(format!(
                        "{:?} keys take `public_key_file`, not a secret",
                        k.algorithm
                    )));
                }
                let public = k
                    .public_key_file
                    .as_ref()
                    .ok_or_else(|| fail("`public_key_file` is required".into()))?;
                let pem = read(public)?;
                let bad = |e: jsonwebtoken::errors::Error| fail(format!("bad PEM key: {e}"));
                let decoding = match k.algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .map_err(bad)?;
                let encoding = match &k.private_key_file {
                    None => None,
                    Some(path) => {
                        let pem = read(path)?;
                        Some(
                            match k.algorithm {
                                Algorithm::ES256 | Algorithm::ES384 => {
                                    EncodingKey::from_ec_pem(&pem)
                                }
                                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                                _ => EncodingKey::from_rsa_pem(&pem),
                            }
                            .map_err(bad)?,
                        )
                    }
                };
                (decoding, encoding)
            };
            if let Some(enc) = encoding {
                signers.push((k.kid.clone(), k.algorithm, enc));
            }
            if keys
                .insert(
                    k.kid.clone(),
                    VerifyingKey {
                        algorithm: k.algorithm,
                        key: decoding,
                    },
                )
                .is_some()
            {
                return Err(fail("duplicate kid".into()));
            }
        }
        let signer =
            match &config.signing_kid {
                Some(kid) => Some(signers.into_iter().find(|(k, _, _)| k == kid).ok_or_else(
                    || {
                        AuthConfigError::NoSigner(format!(
                            " (`{kid}` has no private key or secret)"
                        ))
                    },
                )?),
                None => signers.into_iter().next(),
            };
        Ok(Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            worker_audience: config
                .worker_audience
                .clone()
                .unwrap_or_else(|| format!("{}-workers", config.audience)),
            keys,
            signer,
        })
    }

    /// Checks a user token: signature, algorithm, issuer, audience, expiry and
    /// not-before, and the tenant id.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims: Claims =
            self.decode(token, &self.audience, "sub, tenant, role, iss, aud, exp")?;
        crate::names::check_tenant(&claims.tenant).map_err(|_| {
            AuthError::Invalid("the token's tenant is not a valid tenant id".into())
        })?;
        Ok(claims)
    }

    /// Checks a worker token as [`Auth::verify`] does a user's, against the workers'
    /// audience.
    pub fn verify_worker(&self, token: &str) -> Result<WorkerClaims, AuthError> {
        let claims: WorkerClaims =
            self.decode(token, &self.worker_audience, "sub, pool, iss, aud, exp")?;
        crate::names::check_pool(&claims.pool)
            .map_err(|_| AuthError::Invalid("the token's pool is not a valid pool name".into()))?;
        Ok(claims)
    }

    fn decode<C: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        required: &str,
    ) -> Result<C, AuthError> {
        let invalid = |m: &str| AuthError::Invalid(m.to_string());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| invalid("the token has no `kid`"))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| invalid("the token's `kid` names no key this server accepts"))?;
        if header.alg != key.algorithm {
            return Err(invalid("the token's algorithm does not match its key"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<C>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            AuthError::Invalid(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature does not verify",
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        return AuthError::Invalid(format!(
                            "the token lacks required claims ({required})"
                        ));
                    }
                    _ => "the token could not be verified",
                }
                .to_string(),
            )
        })?;
        Ok(data.claims)
    }

    /// Signs a token for `tenant` with `role`, valid for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        tenant: &str,
        role: Role,
        ttl: Duration,
    ) -> Result<String, AuthConfigError> {
        let now = unix_now();
        self.sign(&Claims {
            sub: subject.to_string(),
            tenant: tenant.to_string(),
            role,
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            nbf: Some(now),
        })
    }

    /// Signs a worker token for `pool`, valid for `ttl`.
    pub fn mint_worker(
        &self,
        subject: &str,
        pool: &str,
        ttl: Duration,
    ) -> Result<String, AuthConfigError> {
        let now = unix_now();
        self.sign(&WorkerClaims {
            sub: subject.to_string(),
            pool: pool.to_string(),
            iss: self.issuer.clone(),
            aud: Audience::One(self.worker_audience.clone()),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            nbf: Some(now),
        })
    }

    fn sign(&self, claims: &impl Serialize) -> Result<String, AuthConfigError> {
        let (kid, algorithm, key) = self
            .signer
            .as_ref()
            .ok_or_else(|| AuthConfigError::NoSigner(String::new()))?;
        let mut header = Header::new(*algorithm);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|e| AuthConfigError::Key {
            kid: kid.clone(),
            reason: e.to_string(),
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Claims {
    pub fn require(&self, need: Role) -> Result<(), AuthError> {
        if self.role >= need {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                have: self.role,
                need,
            })
        }
    }
}
