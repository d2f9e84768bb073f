//! Bearer-token check for every service but health.
use std::sync::Arc;
use tonic::{service::Interceptor, Request, Status};

use super::error::ServerError;

/// Accepts every request when no token is set; otherwise requires
/// `authorization: Bearer <token>`.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<[u8]>>,
}

impl Auth {
    pub fn new(token: Option<&str>) -> Self {
        Auth {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.token else {
            return Ok(req);
        };
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match header.and_then(|h| h.strip_prefix("Bearer ")) {
            Some(got) if same(got.trim().as_bytes(), want) => Ok(req),
            Some(_) => Err(ServerError::Unauthenticated("authorization: wrong bearer token".into()).into()),
            None => Err(ServerError::Unauthenticated(
                "authorization: this daemon requires `authorization: Bearer <token>` metadata (started with --token)".into(),
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(h: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = h {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }

    #[test]
    fn checks_the_bearer_token() {
        let mut open = Auth::new(None);
        assert!(open.call(with(None)).is_ok());
        let mut a = Auth::new(Some("s3cret"));
        assert!(a.call(with(Some("Bearer s3cret"))).is_ok());
        let e = a.call(with(Some("Bearer nope"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            a.call(with(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(a.call(with(Some("s3cret"))).is_err());
    }
}
