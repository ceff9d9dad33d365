//! TLS for the HTTP and TCP listeners (rustls), and optional mutual TLS: a client
//! certificate signed by the configured CA identifies the caller by its subject common name
//! or DNS names, which `client_roles` maps to roles, in place of a bearer token. The syslog
//! listener and the forwarder (RFC 5425) build their server and client configurations here
//! too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
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
    if section.client_ca_path.is_none() && !section.client_roles.is_empty() {
        bail!("server.tls.client_roles needs server.tls.client_ca_path");
    }
    let mut config = server_config(
        &section.cert_path,
        &section.key_path,
        section.client_ca_path.as_deref(),
        section.client_cert_required.unwrap_or(true),
    )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        client_roles: section.client_roles.clone(),
    })
}

/// A server configuration from PEM files: the certificate chain and its key, and with
/// `client_ca` mutual TLS (clients must present a certificate it signed unless
/// `client_cert_required` is false). No ALPN: callers that speak a named protocol set it.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
    client_cert_required: bool,
) -> anyhow::Result<ServerConfig> {
    let certs = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading the private key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
            let v = if client_cert_required {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
    };
    builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the certificate {} and the key {} do not go together",
            cert_path.display(),
            key_path.display()
        )
    })
}

/// A client configuration that trusts only the CA certificates in `ca_path` (a private
/// collector's CA, not the system's roots), optionally presenting a client certificate
/// (`identity`: certificate chain and key, PEM) for mutual TLS.
pub fn client_config(
    ca_path: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots(ca_path)?);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = read_certs(cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .with_context(|| format!("reading the private key {}", key_path.display()))?;
            builder.with_client_auth_cert(certs, key).with_context(|| {
                format!(
                    "the client certificate {} and the key {} do not go together",
                    cert_path.display(),
                    key_path.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

fn roots(ca_path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca_path)? {
        roots
            .add(c)
            .with_context(|| format!("adding a CA certificate from {}", ca_path.display()))?;
    }
    Ok(roots)
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
