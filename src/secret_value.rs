//! Secret material in memory, and the hashes that stand for it wherever a human or a log may
//! look (status, annotations, Events).

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret value (client secret, password, key, token). Its `Debug` never shows the value, so
/// it cannot reach a log line through `{:?}` by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:<16 hex>` of the value: enough to tell tokens apart, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!("sha256:{}", &hex(&digest)[..16])
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_fingerprint_never_show_the_value() {
        let value = SecretValue::new("p8e-very-secret");
        assert_eq!(format!("{value:?}"), "<redacted>");
        let fingerprint = value.fingerprint();
        assert!(fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 16, "{fingerprint}");
        assert!(!fingerprint.contains("secret"));
        assert_ne!(fingerprint, SecretValue::new("p8e-other").fingerprint());
    }
}
