//! TLS to the manager, pinned to the cluster CA.
//!
//! Before registration the agent knows only the CA fingerprint carried in its bootstrap
//! token. [`PinnedCaVerifier`] accepts a manager only if the chain it presents contains
//! a certificate whose SHA-256 equals that fingerprint, and the leaf then verifies
//! against that certificate as the one root (ordinary WebPKI checks: signature, validity,
//! server name). No trust on first use, and no option turns verification off.
//!
//! After registration the agent stores the CA certificate and uses it as the only root
//! ([`client_for_ca`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use protocol::token::CaFingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Time allowed for a TCP connect to the manager.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request (a report batch included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks the manager's chain against the CA fingerprint from the bootstrap token.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: CaFingerprint,
    provider: Arc<CryptoProvider>,
    /// Set when a manager presented a chain without the pinned CA: the caller then
    /// reports a pin mismatch instead of a generic connection error.
    mismatch_seen: AtomicBool,
}

impl PinnedCaVerifier {
    pub fn new(pin: CaFingerprint) -> Self {
        PinnedCaVerifier {
            pin,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            mismatch_seen: AtomicBool::new(false),
        }
    }

    /// True once any handshake failed because the pinned CA was not in the chain.
    pub fn mismatch_seen(&self) -> bool {
        self.mismatch_seen.load(Ordering::Relaxed)
    }

    pub fn pin(&self) -> &CaFingerprint {
        &self.pin
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = std::iter::once(end_entity)
            .chain(intermediates.iter())
            .find(|c| self.pin.matches_der(c.as_ref()));
        let Some(ca) = pinned else {
            self.mismatch_seen.store(true, Ordering::Relaxed);
            return Err(rustls::Error::General(format!(
                "the manager's certificate chain does not contain the CA with fingerprint {} \
                 named in the bootstrap token",
                self.pin
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| {
            rustls::Error::General(format!("the pinned CA certificate is unusable: {e}"))
        })?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| {
                    rustls::Error::General(format!("building the pinned verifier: {e}"))
                })?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A host name to connect to at a known address (found over mDNS) instead of asking
/// the system resolver; TLS still checks the certificate against the name.
pub type Resolve<'a> = Option<(&'a str, std::net::SocketAddr)>;

fn build_client(
    tls: rustls::ClientConfig,
    resolve: Resolve<'_>,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some((name, addr)) = resolve {
        builder = builder.resolve(name, addr);
    }
    builder
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("armada-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTPS client for the manager")
}

/// An HTTPS client that trusts only a manager whose chain holds the pinned CA.
pub fn client_for_pin(
    verifier: Arc<PinnedCaVerifier>,
    resolve: Resolve<'_>,
) -> anyhow::Result<reqwest::Client> {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    build_client(tls, resolve)
}

/// An HTTPS client whose only root is the cluster CA stored at registration.
pub fn client_for_ca(ca_pem: &str, resolve: Resolve<'_>) -> anyhow::Result<reqwest::Client> {
    let ca = ca_der_from_pem(ca_pem)?;
    let mut roots = RootCertStore::empty();
    roots
        .add(ca)
        .context("adding the stored cluster CA as the only root")?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    build_client(tls, resolve)
}

/// The first certificate of a PEM text.
pub fn ca_der_from_pem(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("the CA text holds no PEM certificate")?
        .context("the CA text is not valid PEM")
}

/// Checks that `pem` is the CA the token pins (used on the CA text the manager serves).
pub fn check_ca_pem(pem: &str, pin: &CaFingerprint) -> anyhow::Result<()> {
    let der = ca_der_from_pem(pem)?;
    if !pin.matches_der(der.as_ref()) {
        anyhow::bail!(
            "the manager served a CA certificate with fingerprint {}, not {} from the bootstrap token",
            CaFingerprint::of_der(der.as_ref()),
            pin
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    use std::net::IpAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Pki {
        ca_der: CertificateDer<'static>,
        ca_pem: String,
        leaf_der: CertificateDer<'static>,
        leaf_key: rustls_pki_types::PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test cluster CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec![
            "localhost".to_string(),
            "armada-manager.local".to_string(),
        ])
        .unwrap();
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse::<IpAddr>().unwrap()));
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            leaf_der: leaf.der().clone(),
            leaf_key: rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        }
    }

    /// A one-shot HTTPS server on loopback answering every request with "ok".
    async fn serve(
        chain: Vec<CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> u16 {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 4096];
                        let _ = tls.read(&mut buf).await;
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn pinned_client_accepts_only_the_pinned_ca() {
        let p = pki();
        let port = serve(
            vec![p.leaf_der.clone(), p.ca_der.clone()],
            p.leaf_key.clone_key(),
        )
        .await;
        let url = format!("https://127.0.0.1:{port}/v1/health");

        let good = Arc::new(PinnedCaVerifier::new(CaFingerprint::of_der(
            p.ca_der.as_ref(),
        )));
        let body = client_for_pin(good.clone(), None)
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        assert!(!good.mismatch_seen());

        let other = pki();
        let wrong = Arc::new(PinnedCaVerifier::new(CaFingerprint::of_der(
            other.ca_der.as_ref(),
        )));
        let err = client_for_pin(wrong.clone(), None)
            .unwrap()
            .get(&url)
            .send()
            .await;
        assert!(err.is_err());
        assert!(wrong.mismatch_seen());
    }

    #[tokio::test]
    async fn the_pin_alone_is_not_enough_the_leaf_must_chain_to_it() {
        // The server presents the pinned CA but a leaf from another CA: refused.
        let p = pki();
        let other = pki();
        let port = serve(
            vec![other.leaf_der.clone(), p.ca_der.clone()],
            other.leaf_key.clone_key(),
        )
        .await;
        let url = format!("https://127.0.0.1:{port}/v1/health");
        let v = Arc::new(PinnedCaVerifier::new(CaFingerprint::of_der(
            p.ca_der.as_ref(),
        )));
        assert!(client_for_pin(v.clone(), None)
            .unwrap()
            .get(&url)
            .send()
            .await
            .is_err());
        assert!(
            !v.mismatch_seen(),
            "the pin matched; the chain check refused it"
        );
    }

    #[tokio::test]
    async fn stored_ca_client_trusts_only_that_ca() {
        let p = pki();
        let port = serve(vec![p.leaf_der.clone()], p.leaf_key.clone_key()).await;
        let url = format!("https://127.0.0.1:{port}/v1/health");
        let ok = client_for_ca(&p.ca_pem, None)
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        assert!(ok.status().is_success());
        let other = pki();
        assert!(client_for_ca(&other.ca_pem, None)
            .unwrap()
            .get(&url)
            .send()
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_discovered_address_is_used_under_the_manager_name() {
        let p = pki();
        let port = serve(
            vec![p.leaf_der.clone(), p.ca_der.clone()],
            p.leaf_key.clone_key(),
        )
        .await;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let url = format!("https://armada-manager.local:{port}/v1/health");
        let v = Arc::new(PinnedCaVerifier::new(CaFingerprint::of_der(
            p.ca_der.as_ref(),
        )));
        let client = client_for_pin(v, Some(("armada-manager.local", addr))).unwrap();
        assert_eq!(
            client.get(&url).send().await.unwrap().text().await.unwrap(),
            "ok"
        );
        // The name still has to be in the certificate.
        let wrong = client_for_ca(&p.ca_pem, Some(("not-the-manager.local", addr))).unwrap();
        let url = format!("https://not-the-manager.local:{port}/v1/health");
        assert!(wrong.get(&url).send().await.is_err());
    }

    #[test]
    fn check_ca_pem_compares_fingerprints() {
        let p = pki();
        let other = pki();
        check_ca_pem(&p.ca_pem, &CaFingerprint::of_der(p.ca_der.as_ref())).unwrap();
        let err =
            check_ca_pem(&p.ca_pem, &CaFingerprint::of_der(other.ca_der.as_ref())).unwrap_err();
        assert!(err.to_string().contains("not"), "{err}");
        assert!(ca_der_from_pem("no pem here").is_err());
    }
}
