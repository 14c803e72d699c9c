//! Bearer-key authentication: 401 for a missing, unknown, revoked or expired key;
//! 403 for admin routes without the admin key.

use std::sync::Arc;

use sconce_protocol::ApiError;

use crate::context::Principal;
use crate::error::GatewayError;
use crate::keys::{hash_key, KeyCache};

pub struct Auth {
    pub keys: Arc<KeyCache>,
    admin_hash: Option<String>,
}

impl Auth {
    pub fn new(keys: Arc<KeyCache>, admin_key: Option<&str>) -> Self {
        Self { keys, admin_hash: admin_key.map(hash_key) }
    }

    /// Auth is on when an admin key or any stored key exists.
    pub fn is_enabled(&self) -> bool {
        self.admin_hash.is_some() || !self.keys.is_empty()
    }

    /// The caller behind an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>, now: i64) -> Result<Principal, ApiError> {
        if !self.is_enabled() {
            return Ok(Principal { alias: "anonymous".into(), ..Principal::default() });
        }
        let secret = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| unauthorized("missing API key: send `Authorization: Bearer <key>`"))?;
        if self.admin_hash.as_deref() == Some(hash_key(secret).as_str()) {
            return Ok(Principal {
                key_id: "admin".into(),
                alias: "admin".into(),
                is_admin: true,
                ..Principal::default()
            });
        }
        let key = self
            .keys
            .find(secret)
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
    fn auth_is_off_without_keys_and_on_with_an_admin_key() {
        let keys = Arc::new(KeyCache::default());
        assert!(Auth::new(keys.clone(), None).authenticate(None, 0).is_ok());
        let auth = Auth::new(keys.clone(), Some("sk-admin"));
        assert_eq!(auth.authenticate(None, 0).err().map(|e| e.status), Some(401));
        assert!(auth.authenticate(Some("Bearer sk-admin"), 0).is_ok_and(|p| p.is_admin));
        let (secret, key) = NewKey { alias: "a".into(), team: "t".into(), ..NewKey::default() }.issue(0);
        keys.insert(key);
        let principal = auth.authenticate(Some(&format!("Bearer {secret}")), 0);
        assert_eq!(principal.as_ref().map(|p| p.team.as_str()).ok(), Some("t"));
        assert_eq!(principal.map(|p| require_admin(&p).err().map(|e| e.status)).ok(), Some(Some(403)));
    }
}
