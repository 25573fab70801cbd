//! HTTPS for the fake, so that tests can exercise the operator's CA bundle handling.

use std::sync::Arc;

use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

use crate::Error;

/// An acceptor for the certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1),
/// both PEM. Only HTTP/1.1 is offered, since that is all the server speaks.
pub(crate) fn acceptor(cert_chain_pem: &str, key_pem: &str) -> Result<TlsAcceptor, Error> {
    let tls_error = |err: &dyn std::fmt::Display| Error::Tls(err.to_string());
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| tls_error(&err))?;
    if chain.is_empty() {
        return Err(Error::Tls("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|err| tls_error(&err))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error(&err))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| tls_error(&err))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
