//! TLS for the HTTP and TCP listeners (rustls), and optional mutual TLS: a client
//! certificate signed by the configured CA identifies the caller by its subject common name
//! or DNS names, which `client_roles` maps to roles, in place of a bearer token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::auth::Role;

/// `[server.tls]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain of the server, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// PEM CA certificates that sign client certificates. Set: mutual TLS.
    pub client_ca_path: Option<PathBuf>,
    /// With a client CA: refuse handshakes without a client certificate (default true).
    /// False lets token-only clients in while certificate holders still get their role.
    pub client_cert_required: Option<bool>,
    /// Client certificate name (subject CN or a DNS name) -> role.
    #[serde(default)]
    pub client_roles: BTreeMap<String, Role>,
}

/// What the listeners need: the rustls configuration and the name-to-role map.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub client_roles: BTreeMap<String, Role>,
}

/// The names a verified client certificate carries, for role mapping.
#[derive(Clone, Debug, Default)]
pub struct ClientNames(pub Arc<[String]>);

impl ClientNames {
    /// The first name with a role, and that role.
    pub fn role(&self, map: &BTreeMap<String, Role>) -> Option<(&str, Role)> {
        self.0
            .iter()
            .find_map(|n| map.get(n).map(|r| (n.as_str(), *r)))
    }
}

pub fn load(section: &TlsSection) -> anyhow::Result<Tls> {
    let certs = read_certs(&section.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&section.key_path)
        .with_context(|| format!("reading the private key {}", section.key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &section.client_ca_path {
        None => {
            if !section.client_roles.is_empty() {
                bail!("server.tls.client_roles needs server.tls.client_ca_path");
            }
            builder.with_no_client_auth()
        }
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("adding a CA certificate from {}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if section.client_cert_required.unwrap_or(true) {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the server certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        client_roles: section.client_roles.clone(),
    })
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(certs)
}

/// The subject common names and DNS names of a client's leaf certificate. rustls has
/// already verified the chain; this only reads names.
pub fn client_names(certs: Option<&[CertificateDer<'_>]>) -> ClientNames {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return ClientNames::default();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return ClientNames::default();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_string());
            }
        }
    }
    ClientNames(names.into())
}
