//! Mutual TLS for the XCF link (rustls with aws-lc-rs), unless the site marks the link trusted.
//!
//! Identities come from certificate files, or are derived from the site's XCF key: every node
//! derives the same CA key from the key (HKDF-SHA-256), so a certificate signed by it proves
//! that its holder knows the key. That makes a node a member of the site, nothing finer: any
//! member can mint a certificate for any node name.
//! Node certificates name the node as the DNS name `<node>.xcf.dvipsec` (lowercase).

use std::sync::Arc;

use aws_lc_rs::hkdf;
use aws_lc_rs::signature::Ed25519KeyPair;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::link::LinkSecurity;

/// Why a TLS identity or configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("deriving the XCF CA key from the site key failed")]
    Derive,
    #[error("building a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("reading PEM {what}: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("node name {0:?} does not make a DNS name")]
    NodeName(String),
}

/// What one node presents and trusts on the XCF link.
pub struct XcfIdentity {
    node: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    cas: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for XcfIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XcfIdentity")
            .field("node", &self.node)
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The DNS name a node's certificate carries.
pub fn node_dns_name(node: &str) -> Result<ServerName<'static>, TlsError> {
    let name = format!("{}.xcf.dvipsec", node.to_ascii_lowercase());
    ServerName::try_from(name).map_err(|_| TlsError::NodeName(node.to_owned()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl XcfIdentity {
    /// An identity for `node` derived from the site's XCF key `site_key`.
    pub fn from_site_key(site: &str, node: &str, site_key: &[u8]) -> Result<Self, TlsError> {
        let ca_key = derived_ca_key(site, site_key)?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("dvipsec XCF CA of site {site}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key)?;

        let node_key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let dns = node_dns_name(node)?.to_str().into_owned();
        let mut params = CertificateParams::new(vec![dns])?;
        params
            .distinguished_name
            .push(DnType::CommonName, node.to_owned());
        let cert = params.signed_by(&node_key, &ca, &ca_key)?;

        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone())?;
        Ok(XcfIdentity {
            node: node.to_owned(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der())),
            roots: Arc::new(roots),
            cas: vec![ca.der().clone()],
        })
    }

    /// An identity from PEM files' contents: the node's certificate chain, its private key and
    /// the CA that signs every node of the site.
    pub fn from_pem(
        node: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = read_certs(chain_pem, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| TlsError::Pem {
            what: "private key",
            detail: err.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        let cas = read_certs(ca_pem, "CA certificate")?;
        for ca in &cas {
            roots.add(ca.clone())?;
        }
        Ok(XcfIdentity {
            node: node.to_owned(),
            chain,
            key,
            roots: Arc::new(roots),
            cas,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's certificate chain as PEM (public: no key).
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|der| to_pem(der)).collect()
    }

    /// The CA certificates this node trusts, as PEM.
    pub fn ca_pem(&self) -> String {
        self.cas.iter().map(|der| to_pem(der)).collect()
    }

    /// Server side (the distributor accepts targets): client certificates are required.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider()).build()?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }

    /// Client side (a target connects to its distributor).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|err| TlsError::Pem {
                what: "server verifier",
                detail: err.to_string(),
            })?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

fn to_pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
}

fn read_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|err| TlsError::Pem {
            what,
            detail: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            detail: "no certificate in it".to_owned(),
        });
    }
    Ok(certs)
}

/// The CA key every node of `site` derives from the site key.
fn derived_ca_key(site: &str, site_key: &[u8]) -> Result<KeyPair, TlsError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"dvipsec XCF CA v1");
    let info = [site.as_bytes()];
    let mut seed = Zeroizing::new([0u8; 32]);
    salt.extract(site_key)
        .expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(seed.as_mut()))
        .map_err(|_| TlsError::Derive)?;
    let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|_| TlsError::Derive)?;
    let pkcs8 = pair.to_pkcs8().map_err(|_| TlsError::Derive)?;
    let der = PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &der,
        &rcgen::PKCS_ED25519,
    )?)
}

/// Whether the peer of an established TLS connection holds a certificate for `node`.
pub fn peer_is(peer_certificates: Option<&[CertificateDer<'_>]>, node: &str) -> bool {
    let Some(end_entity) = peer_certificates.and_then(|certs| certs.first()) else {
        return false;
    };
    let Ok(name) = node_dns_name(node) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The security of a link: trusted by the site, protected by TLS, or neither.
pub fn link_security(site_trusts_link: bool, tls: bool) -> LinkSecurity {
    if tls {
        LinkSecurity::Protected
    } else if site_trusts_link {
        LinkSecurity::Trusted
    } else {
        LinkSecurity::Unprotected
    }
}
