//! Throwaway certificates for local clusters (`kv dev --tls`) and tests:
//! a fresh CA, one certificate per node (valid for its host and for the DNS
//! name `node-<ID>`, see `node::tls`), and one client certificate. Built
//! with rcgen; keys never leave the directory they are written to (mode
//! 0600). Not for production: operators bring their own CA.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType};

use super::tls::member_name;
use crate::clock::NodeId;

/// The files [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct DevCerts {
    pub ca: PathBuf,
    /// Per node: (id, certificate, key).
    pub nodes: Vec<(NodeId, PathBuf, PathBuf)>,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevCerts {
    /// The `kv serve` flags of node `id`.
    pub fn serve_args(&self, id: NodeId) -> Vec<String> {
        let (_, cert, key) = self.nodes.iter().find(|n| n.0 == id).expect("a node we generated");
        vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }
}

/// A CA that can sign certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    pub fn new(name: &str) -> Result<Ca, String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(Ca { params, key, cert })
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (IP addresses or DNS names) signed by this
    /// CA, valid from `not_before` to `not_after`; (certificate, key) PEM.
    pub fn issue(
        &self,
        names: &[String],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<(String, String), String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(|e: rcgen::Error| e.to_string()),
            })
            .collect::<Result<_, _>>()?;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// [`Ca::issue`], valid from a day ago for a year.
    pub fn issue_now(&self, names: &[String]) -> Result<(String, String), String> {
        let now = time::OffsetDateTime::now_utc();
        self.issue(names, now - time::Duration::days(1), now + time::Duration::days(365))
    }
}

/// Writes `text` to `path`, private to this user.
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A CA and certificates for `nodes` (id, host) and one client, in `dir`.
pub fn generate(dir: &Path, nodes: &[(NodeId, String)]) -> Result<DevCerts, String> {
    generate_keeping_ca(dir, nodes).map(|(certs, _)| certs)
}

/// [`generate`], and the CA, to issue certificates for nodes that join
/// later ([`DevCerts::issue_node`]).
pub fn generate_keeping_ca(dir: &Path, nodes: &[(NodeId, String)]) -> Result<(DevCerts, Ca), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca = Ca::new("capkv dev CA")?;
    let ca_path = dir.join("ca.pem");
    write_private(&ca_path, &ca.pem())?;
    let (cert, key) = ca.issue_now(&["client".to_string()])?;
    let (client_cert, client_key) = (dir.join("client.pem"), dir.join("client-key.pem"));
    write_private(&client_cert, &cert)?;
    write_private(&client_key, &key)?;
    let mut certs = DevCerts { ca: ca_path, nodes: Vec::new(), client_cert, client_key };
    for (id, host) in nodes {
        certs.issue_node(&ca, dir, *id, host)?;
    }
    Ok((certs, ca))
}

impl DevCerts {
    /// Issues node `id`'s certificate (for `host`, `localhost` and the DNS
    /// name `node-<ID>`) with `ca`, writes it to `dir` and adds it to
    /// [`DevCerts::nodes`].
    pub fn issue_node(&mut self, ca: &Ca, dir: &Path, id: NodeId, host: &str) -> Result<(), String> {
        let (cert, key) = ca.issue_now(&[host.to_string(), "localhost".into(), member_name(id)])?;
        let (c, k) = (dir.join(format!("node-{id}.pem")), dir.join(format!("node-{id}-key.pem")));
        write_private(&c, &cert)?;
        write_private(&k, &key)?;
        self.nodes.retain(|n| n.0 != id);
        self.nodes.push((id, c, k));
        Ok(())
    }
}
