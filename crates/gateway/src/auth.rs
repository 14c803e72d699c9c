//! Bearer-key authentication: 401 for a missing, unknown, revoked or expired key;
//! 403 for admin routes without the admin key. Auth is on unless configured `off`:
//! it never depends on how many keys exist.

use std::sync::Arc;

use sconce_protocol::ApiError;
use subtle::ConstantTimeEq;

use crate::config::AuthMode;
use crate::context::Principal;
use crate::error::GatewayError;
use crate::keys::{hash_key, KeyCache};

pub struct Auth {
    pub keys: Arc<KeyCache>,
    admin_hash: Option<String>,
    mode: AuthMode,
}

impl Auth {
    pub fn new(keys: Arc<KeyCache>, admin_key: Option<&str>, mode: AuthMode) -> Self {
        Self { keys, admin_hash: admin_key.filter(|key| !key.is_empty()).map(hash_key), mode }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The caller behind an `Authorization` header value. With auth `off` anyone is
    /// anonymous, but the admin key and valid keys are still recognised.
    pub fn authenticate(&self, authorization: Option<&str>, now: i64) -> Result<Principal, ApiError> {
        let found = bearer(authorization).map(|secret| self.lookup(secret, now));
        match (found, self.mode) {
            (Some(Ok(principal)), _) => Ok(principal),
            (_, AuthMode::Off) => Ok(Principal { alias: "anonymous".into(), ..Principal::default() }),
            (Some(Err(error)), AuthMode::Required) => Err(error),
            (None, AuthMode::Required) => Err(unauthorized("missing API key: send `Authorization: Bearer <key>`")),
        }
    }

    fn lookup(&self, secret: &str, now: i64) -> Result<Principal, ApiError> {
        let hash = hash_key(secret);
        if self.is_admin_hash(&hash) {
            return Ok(Principal {
                key_id: "admin".into(),
                alias: "admin".into(),
                is_admin: true,
                ..Principal::default()
            });
        }
        // Keys are found by the SHA-256 of the secret: the lookup's timing says nothing
        // about the secret itself.
        let key = self
            .keys
            .find_hash(&hash)
            .filter(|key| key.is_active(now))
            .ok_or_else(|| unauthorized("incorrect, revoked or expired API key"))?;
        Ok(Principal {
            key_id: key.id.clone(),
            alias: key.alias.clone(),
            team: key.team.clone(),
            is_admin: false,
            key: Some(key),
        })
    }

    /// Compares in constant time.
    fn is_admin_hash(&self, hash: &str) -> bool {
        self.admin_hash.as_deref().is_some_and(|admin| bool::from(admin.as_bytes().ct_eq(hash.as_bytes())))
    }
}

/// The secret of `Bearer <secret>`, when there is one.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
}

pub fn unauthorized(message: &str) -> ApiError {
    GatewayError::Unauthorized(message.to_string()).into()
}

pub fn forbidden(message: &str) -> ApiError {
    GatewayError::Forbidden(message.to_string()).into()
}

/// Refuses anyone but the admin.
pub fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_admin {
        Ok(())
    } else {
        Err(forbidden("this endpoint needs the admin key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NewKey;

    #[test]
    fn required_auth_refuses_anonymous_callers_whatever_the_key_table_holds() {
        let keys = Arc::new(KeyCache::default());
        let without_admin = Auth::new(keys.clone(), None, AuthMode::Required);
        assert_eq!(without_admin.authenticate(None, 0).err().map(|e| e.status), Some(401), "an empty key table");
        let auth = Auth::new(keys.clone(), Some("sk-admin"), AuthMode::Required);
        assert_eq!(auth.authenticate(None, 0).err().map(|e| e.status), Some(401));
        assert_eq!(auth.authenticate(Some("Bearer sk-admin2"), 0).err().map(|e| e.status), Some(401));
        assert!(auth.authenticate(Some("Bearer sk-admin"), 0).is_ok_and(|p| p.is_admin));
        let (secret, key) = NewKey { alias: "a".into(), team: "t".into(), ..NewKey::default() }.issue(0);
        keys.insert(key);
        let principal = auth.authenticate(Some(&format!("Bearer {secret}")), 0);
        assert_eq!(principal.as_ref().map(|p| p.team.as_str()).ok(), Some("t"));
        assert_eq!(principal.map(|p| require_admin(&p).err().map(|e| e.status)).ok(), Some(Some(403)));
        keys.replace_all(Vec::new());
        assert_eq!(auth.authenticate(Some(&format!("Bearer {secret}")), 0).err().map(|e| e.status), Some(401));
        assert_eq!(auth.authenticate(None, 0).err().map(|e| e.status), Some(401), "still closed with no keys");
    }

    #[test]
    fn auth_off_lets_anyone_in_and_still_knows_the_admin() {
        let auth = Auth::new(Arc::new(KeyCache::default()), Some("sk-admin"), AuthMode::Off);
        assert!(auth.authenticate(None, 0).is_ok_and(|p| !p.is_admin && p.key.is_none()));
        assert!(auth.authenticate(Some("Bearer EMPTY"), 0).is_ok_and(|p| !p.is_admin));
        assert!(auth.authenticate(Some("Bearer sk-admin"), 0).is_ok_and(|p| p.is_admin));
    }
}
