//! API keys: `authorization: Bearer <key>` on every DCB call when keys are configured.

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use umadb_core::Error;
use umadb_proto::status_from_error;

/// Checks the `authorization` metadata of each call against the configured keys.
#[derive(Clone)]
pub(crate) struct ApiKeys {
    keys: std::sync::Arc<[Vec<u8>]>,
}

impl ApiKeys {
    /// Empty keys are ignored.
    pub fn new(keys: &[String]) -> Self {
        ApiKeys {
            keys: keys
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().to_vec())
                .collect(),
        }
    }

    fn check(&self, header: Option<&[u8]>) -> Result<(), Error> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let Some(header) = header else {
            return Err(Error::Authentication(
                "this server requires an API key: send metadata `authorization: Bearer <key>`"
                    .into(),
            ));
        };
        // The scheme name is case-insensitive (RFC 6750).
        let presented = match header.split_at_checked(7) {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case(b"bearer ") => key.trim_ascii(),
            _ => {
                return Err(Error::Authentication(
                    "the authorization metadata must have the form `Bearer <key>`".into(),
                ))
            }
        };
        // Compare with every key, without stopping early, so timing reveals nothing.
        let mut matched = subtle::Choice::from(0);
        for key in self.keys.iter() {
            matched |= key.as_slice().ct_eq(presented);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Error::Authentication("the API key is not valid".into()))
        }
    }
}

impl Interceptor for ApiKeys {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match self.check(header) {
            Ok(()) => Ok(request),
            Err(e) => {
                tracing::debug!(error = %e, "rejected a call");
                Err(status_from_error(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> ApiKeys {
        ApiKeys::new(&k.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_configured_keys_lets_every_call_through() {
        assert!(keys(&[]).check(None).is_ok());
    }

    #[test]
    fn any_configured_key_is_accepted() {
        let k = keys(&["old", "new"]);
        assert!(k.check(Some(b"Bearer old")).is_ok());
        assert!(k.check(Some(b"Bearer new")).is_ok());
        assert!(k.check(Some(b"bearer new")).is_ok());
    }

    #[test]
    fn missing_malformed_and_wrong_keys_are_authentication_errors() {
        let k = keys(&["secret"]);
        for header in [
            None,
            Some(&b"secret"[..]),
            Some(b"Bearer wrong"),
            Some(b"Bearer "),
        ] {
            assert!(matches!(k.check(header), Err(Error::Authentication(_))));
        }
    }

    #[test]
    fn a_prefix_of_a_key_is_not_the_key() {
        assert!(keys(&["secret"]).check(Some(b"Bearer secre")).is_err());
    }
}
