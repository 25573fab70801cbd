//! The control plane's PKI, generated fresh for every run: a CA, the API server's serving
//! certificate, an admin client certificate and the ServiceAccount token signing key.

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM-encoded material; keys are PKCS#8.
pub(crate) struct Pki {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    pub service_account_key: String,
    pub service_account_public_key: String,
}

/// A leaf certificate and its private key.
struct Leaf {
    cert: String,
    key: String,
}

impl Pki {
    pub fn generate() -> Result<Self> {
        // A separate CA rather than one self-signed certificate: rustls (webpki) refuses a
        // CA certificate presented as the server's own end-entity certificate.
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = common_name("test-support CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut serving = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
        serving.distinguished_name = common_name("kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = sign(serving, &ca)?;

        // The API server maps CN to the user name and O to groups; system:masters bypasses RBAC.
        let mut admin = CertificateParams::default();
        admin.distinguished_name = common_name("admin");
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin = sign(admin, &ca)?;

        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca_cert: ca.pem(),
            serving_cert: serving.cert,
            serving_key: serving.key,
            admin_cert: admin.cert,
            admin_key: admin.key,
            service_account_key: service_account.serialize_pem(),
            service_account_public_key: service_account.public_key_pem(),
        })
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn sign(params: CertificateParams, ca: &CertifiedIssuer<'_, KeyPair>) -> Result<Leaf> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok(Leaf { cert: cert.pem(), key: key.serialize_pem() })
}
