//! Client authentication with static bearer tokens (issue 23), in the
//! manner of etcd's simple tokens: a file maps tokens to roles, and every
//! client request carries `authorization: Bearer <token>`.
//!
//! Why here: one tower layer ([`AuthLayer`]) wraps each gRPC server, so no
//! service handler can forget the check; a request that fails it never
//! reaches a handler, so nothing is applied. What it promises:
//! - with no token file, requests pass unchecked (as before);
//! - with one, a client request without a known token fails with
//!   UNAUTHENTICATED ("unauthenticated: ..."), and one whose token's role is
//!   too weak for the method with PERMISSION_DENIED ("permission denied:
//!   ..."); the caller's role travels on to the handler in the request's
//!   extensions, where the Kv session stream checks each write it carries
//!   ([`Role::check_write`]);
//! - peer services (Peer, TopicPeer) are not token-checked: the peer port
//!   is for nodes only (see docs/operations.md, "Firewalling"). Admin (the
//!   test hooks, on the peer port) needs the `admin` role, and is off
//!   unless the node runs with `--enable-test-hooks`. Changing the cluster
//!   (`Cluster.ChangeMembers`, `Topics.ReassignPartition`) needs `admin`.
//!
//! Token file format: one token per line, `TOKEN ROLE`, where ROLE is
//! `read`, `readwrite` or `admin`; blank lines and lines starting with `#`
//! are ignored. A token is [`TOKEN_CHARS_MIN`] to [`TOKEN_CHARS_MAX`]
//! characters from RFC 6750's token alphabet (letters, digits, `-._~+/=`).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::Status;

/// Shortest token accepted (guessing one must be hopeless).
pub const TOKEN_CHARS_MIN: usize = 16;
/// Longest token accepted (bounds what a request header makes us hash).
pub const TOKEN_CHARS_MAX: usize = 256;
/// Most tokens a file may hold.
pub const TOKENS_MAX: usize = 10_000;
/// Largest token file read, in bytes.
pub const TOKEN_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// What a token allows, weakest first: each role allows what the ones
/// before it do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Gets, status, topic metadata and consuming (fetch, consumer groups,
    /// offsets, as Kafka's READ).
    Read,
    /// Also sets, deletes, CAS, creating and deleting topics and producing.
    ReadWrite,
    /// Also the Admin test hooks (clock offset) and moving partition
    /// replicas (`ReassignPartition`).
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "readwrite" => Some(Role::ReadWrite),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::ReadWrite => "readwrite",
            Role::Admin => "admin",
        }
    }

    /// For a write inside a Kv session: `role` is the caller's (`None` when
    /// the node checks no tokens).
    pub fn check_write(role: Option<Role>, what: &str) -> Result<(), Status> {
        match role {
            Some(r) if r < Role::ReadWrite => Err(denied(r, Role::ReadWrite, what)),
            _ => Ok(()),
        }
    }
}

fn denied(have: Role, need: Role, what: &str) -> Status {
    Status::permission_denied(format!(
        "permission denied: {what} needs a token with role {} or stronger; this token's role is {}",
        need.as_str(),
        have.as_str()
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("token file {path} is larger than {TOKEN_FILE_BYTES_MAX} bytes")]
    TooLarge { path: PathBuf },
    #[error("token file {path}, line {line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
    #[error("token file {path} lists no token: expected lines `TOKEN ROLE` (role read, readwrite or admin)")]
    Empty { path: PathBuf },
}

/// The tokens a node accepts, each with its role.
#[derive(Default)]
pub struct Tokens {
    roles: HashMap<String, Role>,
}

/// Never prints a token (the node's configuration is logged with `{:?}`).
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.roles.len())
    }
}

impl Tokens {
    /// Reads and parses the token file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        let read = |source| TokenFileError::Read { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > TOKEN_FILE_BYTES_MAX {
            return Err(TokenFileError::TooLarge { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let tokens = Tokens::parse(&text).map_err(|(line, message)| TokenFileError::Line {
            path: path.to_path_buf(),
            line,
            message,
        })?;
        if tokens.roles.is_empty() {
            return Err(TokenFileError::Empty { path: path.to_path_buf() });
        }
        Ok(tokens)
    }

    /// Parses the file format (see the module docs); an error names the
    /// 1-based line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Tokens, (usize, String)> {
        let mut roles = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let &[token, role] = &fields[..] else {
                return Err((i + 1, format!("expected `TOKEN ROLE`, found {} fields", fields.len())));
            };
            check_token(token).map_err(|m| (i + 1, m))?;
            let Some(role) = Role::parse(role) else {
                return Err((i + 1, format!("unknown role {role:?}: expected read, readwrite or admin")));
            };
            if roles.insert(token.to_string(), role).is_some() {
                return Err((i + 1, "this token appears on an earlier line too".to_string()));
            }
            if roles.len() > TOKENS_MAX {
                return Err((i + 1, format!("more than {TOKENS_MAX} tokens")));
            }
        }
        Ok(Tokens { roles })
    }

    pub fn len(&self) -> usize {
        self.roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The role of `token`, if it is one of ours.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.roles.get(token).copied()
    }

    /// Checks the `authorization` header of a call to `path` (a gRPC path,
    /// `/package.Service/Method`): `Ok(Some(role))` for an authenticated
    /// client call, `Ok(None)` for a peer call (not checked).
    pub fn check(&self, path: &str, authorization: Option<&http::HeaderValue>) -> Result<Option<Role>, Status> {
        let Some(need) = required_role(path) else { return Ok(None) };
        let Some(value) = authorization else {
            return Err(Status::unauthenticated(
                "unauthenticated: this node requires a token; pass --token TOKEN or set KV_TOKEN",
            ));
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let Some(token) = token else {
            return Err(Status::unauthenticated("unauthenticated: the authorization header must be `Bearer TOKEN`"));
        };
        let Some(role) = self.role_of(token) else {
            return Err(Status::unauthenticated("unauthenticated: unknown token (not in this node's token file)"));
        };
        if role < need {
            return Err(denied(role, need, &method_name(path)));
        }
        Ok(Some(role))
    }
}

/// `token` is TOKEN_CHARS_MIN..=TOKEN_CHARS_MAX characters of RFC 6750's
/// token alphabet.
pub fn check_token(token: &str) -> Result<(), String> {
    if !(TOKEN_CHARS_MIN..=TOKEN_CHARS_MAX).contains(&token.len()) {
        return Err(format!(
            "a token must be {TOKEN_CHARS_MIN} to {TOKEN_CHARS_MAX} characters long; this one has {}",
            token.len()
        ));
    }
    if let Some(c) = token.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(*c))) {
        return Err(format!("a token may hold letters, digits and -._~+/= only, not {c:?}"));
    }
    Ok(())
}

/// `Service/Method` of a gRPC path, for error messages.
fn method_name(path: &str) -> String {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method)) => {
            format!("{}/{method}", service.rsplit('.').next().unwrap_or(service))
        }
        None => path.to_string(),
    }
}

/// The role a call to `path` needs; `None` for the peer services, which
/// are not token-checked.
pub fn required_role(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        s if s.starts_with("capkv.peer.") => None,
        "capkv.v1.Admin" => Some(Role::Admin),
        // A session carries gets and writes: it needs `read` to open, and
        // each write on it is checked by the session (`Role::check_write`).
        "capkv.v1.Kv" if matches!(method, "Get" | "Session") => Some(Role::Read),
        "capkv.v1.Kv" => Some(Role::ReadWrite),
        // Moving replicas changes the cluster's layout: an operator's call.
        "capkv.v1.Topics" if method == "ReassignPartition" => Some(Role::Admin),
        "capkv.v1.Cluster" if method == "ChangeMembers" => Some(Role::Admin),
        "capkv.v1.Topics" if matches!(method, "CreateTopic" | "DeleteTopic" | "Produce") => Some(Role::ReadWrite),
        // Everything else a client may call, known or not (tonic answers
        // UNIMPLEMENTED to an unknown method once the caller is known).
        _ => Some(Role::Read),
    }
}

/// The tower layer that checks tokens in front of every service of a
/// server; with `None` it lets everything through.
#[derive(Clone, Default)]
pub struct AuthLayer {
    tokens: Option<Arc<Tokens>>,
}

impl AuthLayer {
    pub fn new(tokens: Option<Arc<Tokens>>) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, tokens: self.tokens.clone() }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, BoxFuture<http::Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(tokens) = &self.tokens else { return futures::future::Either::Left(self.inner.call(req)) };
        match tokens.check(req.uri().path(), req.headers().get(http::header::AUTHORIZATION)) {
            Ok(role) => {
                if let Some(role) = role {
                    req.extensions_mut().insert(role);
                }
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(status) => {
                tracing::debug!(path = req.uri().path(), code = ?status.code(), "request refused by token check");
                futures::future::Either::Right(Box::pin(std::future::ready(Ok(status.into_http()))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "aaaaaaaaaaaaaaaa-read";
    const T2: &str = "bbbbbbbbbbbbbbbb_write";
    const T3: &str = "cccccccccccccccc+admin=";

    // Proves: the file format's comments, blank lines and three roles are
    // read, and each token maps to its own role.
    #[test]
    fn parses_tokens_roles_comments_and_blank_lines() {
        let text = format!("# tokens\n\n{T1} read\n  {T2}\treadwrite  \n{T3} admin\n");
        let t = Tokens::parse(&text).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.role_of(T1), Some(Role::Read));
        assert_eq!(t.role_of(T2), Some(Role::ReadWrite));
        assert_eq!(t.role_of(T3), Some(Role::Admin));
        assert_eq!(t.role_of("not-a-token-at-all"), None);
        assert!(Tokens::parse("# nothing\n").unwrap().is_empty());
    }

    // Proves: every malformed line is refused with its line number and a
    // sentence saying what is wrong.
    #[test]
    fn bad_lines_are_named() {
        for (text, line, needle) in [
            (format!("{T1}\n"), 1, "expected `TOKEN ROLE`, found 1 fields"),
            (format!("# c\n{T1} read extra\n"), 2, "found 3 fields"),
            (format!("{T1} read\n{T2} superuser\n"), 2, "unknown role \"superuser\""),
            ("short read\n".to_string(), 1, "16 to 256 characters"),
            (format!("{} read\n", "x".repeat(257)), 1, "16 to 256 characters"),
            ("aaaaaaaaaaaaaaaa$$ read\n".to_string(), 1, "not '$'"),
            (format!("{T1} read\n\n{T1} admin\n"), 3, "appears on an earlier line"),
        ] {
            let (l, m) = Tokens::parse(&text).unwrap_err();
            assert_eq!(l, line, "{text:?}: {m}");
            assert!(m.contains(needle), "{text:?}: {m}");
        }
    }

    // Proves: the load errors name the file and the line; an empty file is
    // refused rather than read as "no client may do anything".
    #[test]
    fn load_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, format!("{T1} read\n{T2} root\n")).unwrap();
        let e = Tokens::load(&p).unwrap_err().to_string();
        assert!(e.contains("tokens, line 2: unknown role \"root\""), "{e}");
        std::fs::write(&p, "# none yet\n").unwrap();
        assert!(Tokens::load(&p).unwrap_err().to_string().contains("lists no token"));
        let e = Tokens::load(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot read token file"), "{e}");
    }

    // Proves: which role each kind of call needs, and that peer services
    // are not checked.
    #[test]
    fn roles_needed_per_method() {
        assert_eq!(required_role("/capkv.v1.Kv/Get"), Some(Role::Read));
        assert_eq!(required_role("/capkv.v1.Kv/Session"), Some(Role::Read));
        assert_eq!(required_role("/capkv.v1.Kv/Set"), Some(Role::ReadWrite));
        assert_eq!(required_role("/capkv.v1.Kv/Cas"), Some(Role::ReadWrite));
        assert_eq!(required_role("/capkv.v1.Topics/Produce"), Some(Role::ReadWrite));
        assert_eq!(required_role("/capkv.v1.Topics/ReassignPartition"), Some(Role::Admin));
        assert_eq!(required_role("/capkv.v1.Topics/Fetch"), Some(Role::Read));
        assert_eq!(required_role("/capkv.v1.Cluster/Status"), Some(Role::Read));
        assert_eq!(required_role("/capkv.v1.Cluster/ChangeMembers"), Some(Role::Admin));
        assert_eq!(required_role("/capkv.v1.Admin/SetClockOffset"), Some(Role::Admin));
        assert_eq!(required_role("/capkv.peer.v1.Peer/Replicate"), None);
        assert_eq!(required_role("/capkv.peer.v1.TopicPeer/ReplicaFetch"), None);
        assert_eq!(required_role("/nobody.Knows/This"), Some(Role::Read));
    }

    // Proves: the check answers UNAUTHENTICATED without a known token and
    // PERMISSION_DENIED for a weak role, with the sentence the CLI prints.
    #[test]
    fn check_refuses_missing_unknown_and_weak_tokens() {
        let t = Tokens::parse(&format!("{T1} read\n{T3} admin\n")).unwrap();
        let bearer = |s: &str| http::HeaderValue::from_str(&format!("Bearer {s}")).unwrap();
        let e = t.check("/capkv.v1.Kv/Get", None).unwrap_err();
        assert_eq!((e.code(), e.message().starts_with("unauthenticated: ")), (tonic::Code::Unauthenticated, true));
        let e = t.check("/capkv.v1.Kv/Get", Some(&bearer("zzzzzzzzzzzzzzzzzzzz"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = t.check("/capkv.v1.Kv/Get", Some(&http::HeaderValue::from_static("Basic abc"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(t.check("/capkv.v1.Kv/Get", Some(&bearer(T1))).unwrap(), Some(Role::Read));
        let e = t.check("/capkv.v1.Kv/Set", Some(&bearer(T1))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("Kv/Set needs a token with role readwrite"), "{}", e.message());
        let e = t.check("/capkv.v1.Admin/SetClockOffset", Some(&bearer(T1))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(t.check("/capkv.v1.Kv/Set", Some(&bearer(T3))).unwrap(), Some(Role::Admin));
        assert_eq!(t.check("/capkv.peer.v1.Peer/Ping", None).unwrap(), None);
        assert!(Role::check_write(Some(Role::Read), "set").is_err());
        assert!(Role::check_write(Some(Role::ReadWrite), "set").is_ok());
        assert!(Role::check_write(None, "set").is_ok());
    }
}
