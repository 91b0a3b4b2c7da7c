//! Throwaway certificates for tests and `rafka dev-cluster --tls` (rcgen, ECDSA P-256):
//! a CA, and certificates it signs for `localhost` and `127.0.0.1`, each good for both
//! serving and dialling (server and client usage). Not for production: the CA key lies
//! beside the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA made here, able to sign more certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate (PEM).
    pub cert_pem: String,
    /// Where its certificate was written.
    pub cert_file: PathBuf,
}

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct DevCert {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key_file: PathBuf,
}

fn fail(e: impl std::fmt::Display) -> String {
    format!("making a dev certificate: {e}")
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("protecting {}: {e}", path.display()))?;
    }
    Ok(())
}

impl DevCa {
    /// Makes a CA called `name` and writes its certificate to `dir/{name}.pem` (and its
    /// key to `dir/{name}.key`).
    pub fn create(dir: &Path, name: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::new()).map_err(fail)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("rafka dev CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.self_signed(&key).map_err(fail)?;
        let cert_pem = cert.pem();
        let cert_file = dir.join(format!("{name}.pem"));
        write(&cert_file, &cert_pem, false)?;
        write(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
            cert_file,
        })
    }

    /// Signs a certificate for `localhost` and `127.0.0.1` (and `extra_names`) with
    /// common name `name`, written to `dir/{name}.pem` and `dir/{name}.key`.
    pub fn issue(&self, dir: &Path, name: &str, extra_names: &[String]) -> Result<DevCert, String> {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        let out = DevCert {
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}.key")),
        };
        write(&out.cert_file, &cert.pem(), false)?;
        write(&out.key_file, &key.serialize_pem(), true)?;
        Ok(out)
    }
}
