//! The client's bearer token: one tonic interceptor, on every connection
//! the client opens, adds `authorization: Bearer TOKEN` to each call (a
//! unary call, the opening of a session stream, a topic call). Nodes started
//! with a token file refuse calls without a known token (UNAUTHENTICATED)
//! or with too weak a role (PERMISSION_DENIED).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A connection to a node with the client's token attached to every call.
pub type Conn = InterceptedService<Channel, Bearer>;

/// The interceptor: adds the token when there is one.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// `token` as a bearer credential; `None` sends none. The token must be
    /// printable ASCII without spaces (what a header can carry).
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        let Some(token) = token else { return Ok(Bearer(None)) };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("invalid token: expected printable ASCII characters without spaces".to_string());
        }
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| format!("invalid token: {e}"))?;
        Ok(Bearer(Some(value)))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: the token travels as `Bearer TOKEN`, no token adds nothing,
    // and a token a header cannot carry is refused up front.
    #[test]
    fn adds_the_bearer_header_only_when_set() {
        let mut b = Bearer::new(Some("abcdefghijklmnop")).unwrap();
        let r = b.call(Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer abcdefghijklmnop");
        let r = Bearer::new(None).unwrap().call(Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
        for bad in ["", "has space", "tab\there", "ünïcode"] {
            assert!(Bearer::new(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
