//! A test certificate authority (rcgen) for the TLS tests: leaves in memory or as files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate: DER and PEM of the certificate and of its key.
pub struct Leaf {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).expect("self-signed CA");
        Ca { cert, key }
    }

    /// Writes the CA certificate to `dir/<file>`; returns its path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let p = dir.join(file);
        std::fs::write(&p, self.cert.pem()).expect("write CA");
        p
    }

    /// A leaf for `cn` and `sans` (DNS names or IP addresses) with the given key usages.
    pub fn leaf(&self, cn: &str, sans: &[&str], usages: &[ExtendedKeyUsagePurpose]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = usages.to_vec();
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        Leaf {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Issues a leaf usable by servers and clients, written to `dir/<name>.pem` and
    /// `dir/<name>.key`: returns both paths.
    pub fn issue(&self, dir: &Path, name: &str, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let leaf = self.leaf(cn, sans, &[ServerAuth, ClientAuth]);
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, leaf.cert_pem).expect("write cert");
        std::fs::write(&k, leaf.key_pem).expect("write key");
        (c, k)
    }
}
