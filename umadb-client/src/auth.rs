//! The API key, sent with every call.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::{Error, Result};

/// Adds `authorization: Bearer <key>` to every request when a key is configured.
#[derive(Clone, Default)]
pub(crate) struct ApiKey {
    header: Option<MetadataValue<Ascii>>,
}

impl ApiKey {
    pub(crate) fn new(key: Option<&str>) -> Result<Self> {
        let header = match key {
            None => None,
            Some(key) => {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {key}").parse().map_err(|_| {
                        Error::InvalidArgument(
                            "the API key must be printable ASCII without line breaks".to_string(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(ApiKey { header })
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_sent_as_bearer_token() {
        let mut interceptor = ApiKey::new(Some("secret")).unwrap();
        let request = interceptor.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer secret"
        );
    }

    #[test]
    fn no_key_sends_no_header() {
        let mut interceptor = ApiKey::new(None).unwrap();
        let request = interceptor.call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn key_with_line_break_is_rejected() {
        assert!(matches!(
            ApiKey::new(Some("a\nb")),
            Err(Error::InvalidArgument(_))
        ));
    }
}
