//! RSA key pairs for Service Account (JWT) clients, in the encodings clients meet: the private
//! key as PKCS#1 and PKCS#8 PEM, the public key as SPKI PEM (what [`ServiceAccount`] registers).
//!
//! [`ServiceAccount`]: crate::ServiceAccount

use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Generate, PrivateKey};

/// A freshly generated RSA key pair. Generation takes about a second in a debug build: share
/// one per test binary.
pub struct RsaKeyPair {
    /// `-----BEGIN RSA PRIVATE KEY-----`
    pub pkcs1_pem: String,
    /// `-----BEGIN PRIVATE KEY-----`
    pub pkcs8_pem: String,
    /// `-----BEGIN PUBLIC KEY-----`
    pub public_pem: String,
}

impl RsaKeyPair {
    /// Generates a key pair; panics only if the RSA library cannot encode its own key.
    pub fn generate() -> Self {
        let key = PrivateKey::generate();
        Self {
            pkcs1_pem: key.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 encoding").to_string(),
            pkcs8_pem: key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 encoding").to_string(),
            public_pem: key.to_public_key().to_public_key_pem(LineEnding::LF).expect("SPKI encoding"),
        }
    }
}
