//! TLS for a node's two ports, and which member a peer request comes from.
//!
//! Why: without it anything that reaches a port can read the traffic, and
//! anything that reaches the peer port can claim to be any member (the peer
//! messages name their sender in a field). What it promises, when a node
//! runs with `--tls-cert/--tls-key/--tls-ca`:
//! - both ports speak only TLS with the node's certificate;
//! - the peer port requires a client certificate signed by the cluster CA
//!   (mutual TLS), and every node dials its peers with its own certificate;
//! - a peer's member id comes from its certificate — the DNS name
//!   `node-<ID>` in its subject alternative names — never from the message:
//!   [`check_claim`] refuses a message whose sender field names another
//!   member (`PERMISSION_DENIED`), so a node holding node 2's certificate
//!   cannot speak for node 3;
//! - the client port asks clients for a certificate but does not require
//!   one (tokens authenticate clients); one that is sent must be signed by
//!   the cluster CA.
//!
//! Without the flags nothing changes: plaintext, no certificate checks.

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use super::config::TlsFiles;
use crate::clock::NodeId;
use capkv_proto::channel::{check_cert_pem, check_key_pem, read_pem, ClientTls};

/// The DNS name a member's certificate carries.
pub fn member_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// A node's TLS settings, read from its files once at start.
#[derive(Clone, Debug)]
pub struct NodeTls {
    /// The client port: our certificate; a client certificate is optional.
    pub client_port: ServerTlsConfig,
    /// The peer port: our certificate; a peer certificate is required.
    pub peer_port: ServerTlsConfig,
    /// How we dial peers: the cluster CA, and our certificate.
    pub dialer: ClientTls,
}

impl NodeTls {
    /// Reads the files; the node's own certificate must name `node-<id>`,
    /// or its peers would refuse it.
    pub fn load(files: &TlsFiles, id: NodeId) -> Result<NodeTls, String> {
        let cert = read_pem("--tls-cert", &files.cert)?;
        let key = read_pem("--tls-key", &files.key)?;
        let ca = read_pem("--tls-ca", &files.ca)?;
        check_cert_pem(&format!("--tls-cert {}", files.cert.display()), &cert)?;
        check_key_pem(&format!("--tls-key {}", files.key.display()), &key)?;
        check_cert_pem(&format!("--tls-ca {}", files.ca.display()), &ca)?;
        let first = first_cert(&cert).ok_or_else(|| format!("--tls-cert {}: no certificate", files.cert.display()))?;
        if cert_names(&first, id).is_err() {
            return Err(format!(
                "--tls-cert {} is not valid for the DNS name {}: each node's certificate must name its member id \
                 (subject alternative name DNS:{})",
                files.cert.display(),
                member_name(id),
                member_name(id)
            ));
        }
        let identity = Identity::from_pem(&cert, &key);
        let root = Certificate::from_pem(&ca);
        Ok(NodeTls {
            client_port: ServerTlsConfig::new()
                .identity(identity.clone())
                .client_ca_root(root.clone())
                .client_auth_optional(true),
            peer_port: ServerTlsConfig::new().identity(identity).client_ca_root(root),
            dialer: ClientTls::from_pem(&ca, Some((&cert, &key)))?,
        })
    }
}

fn first_cert(pem: &[u8]) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).next().and_then(Result::ok)
}

/// Whether `cert` is valid for member `id`'s name.
fn cert_names(cert: &CertificateDer<'_>, id: NodeId) -> Result<(), String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    let name = ServerName::try_from(member_name(id)).map_err(|e| e.to_string())?;
    ee.verify_is_valid_for_subject_name(&name).map_err(|e| e.to_string())
}

/// The one member of `members` whose name the end-entity certificate
/// `certs[0]` carries.
pub fn cert_member<'a>(
    certs: &[CertificateDer<'_>],
    members: impl IntoIterator<Item = &'a NodeId>,
) -> Result<NodeId, Status> {
    let Some(cert) = certs.first() else {
        return Err(Status::unauthenticated("unauthenticated: the peer port needs a client certificate"));
    };
    let named: Vec<NodeId> = members.into_iter().copied().filter(|&id| cert_names(cert, id).is_ok()).collect();
    match named[..] {
        [id] => Ok(id),
        [] => Err(Status::permission_denied(
            "permission denied: the peer certificate names no member of this cluster (expected DNS name node-<ID>)",
        )),
        _ => Err(Status::permission_denied(format!(
            "permission denied: the peer certificate names several members ({named:?}); it must name one"
        ))),
    }
}

/// The member a peer request comes from, by its certificate; `None` when
/// this node does not use TLS. The certificate is matched against the
/// members as they are now (`peers`, which follows the Raft configuration):
/// a node that joined after this one started is accepted, a removed one is
/// refused.
pub fn peer_member<T>(tls: bool, peers: &super::peers::Peers, req: &Request<T>) -> Result<Option<NodeId>, Status> {
    if !tls {
        return Ok(None);
    }
    let certs = req.peer_certs();
    let members = peers.members();
    cert_member(certs.as_deref().map_or(&[][..], |c| &c[..]), members.keys()).map(Some)
}

/// Refuses a peer message whose sender field (`claimed`) is not the member
/// its certificate names. Without TLS it accepts (nothing to check against).
pub fn check_claim(peer: Option<NodeId>, claimed: NodeId) -> Result<(), Status> {
    match peer {
        Some(id) if id != claimed => Err(Status::permission_denied(format!(
            "permission denied: the message says it comes from node {claimed}, but the peer's certificate is node {id}'s"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cert_for(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    // Proves: the member id comes from the certificate's node-<ID> name,
    // exactly one member must match, and a claim for another id is refused.
    #[test]
    fn member_id_comes_from_the_certificate() {
        let members: BTreeMap<NodeId, String> = (1..=3).map(|i| (i, format!("127.0.0.1:{i}"))).collect();
        let c2 = cert_for(&["localhost", "node-2"]);
        assert_eq!(cert_member(&[c2], members.keys()).unwrap(), 2);
        let none = cert_for(&["localhost", "node-9"]);
        assert_eq!(cert_member(&[none], members.keys()).unwrap_err().code(), tonic::Code::PermissionDenied);
        let two = cert_for(&["node-1", "node-3"]);
        assert_eq!(cert_member(&[two], members.keys()).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(cert_member(&[], members.keys()).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(check_claim(Some(2), 2).is_ok());
        let e = check_claim(Some(2), 3).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("comes from node 3") && e.message().contains("node 2's"), "{}", e.message());
        assert!(check_claim(None, 3).is_ok());
    }
}
