//! `rafka tls dev-certs`: throwaway certificates for trying TLS out (a CA and
//! certificates it signs for `localhost` and `127.0.0.1`). Not for production: the CA's
//! key lies beside them.

use std::path::PathBuf;

use crate::tls::dev::DevCa;

/// `rafka tls ...`
#[derive(clap::Subcommand)]
pub enum TlsCommand {
    /// Make a CA (`ca.pem`) and a certificate and key per name (`NAME.pem`, `NAME.key`),
    /// each good for serving and dialling.
    DevCerts {
        /// Directory to write them to.
        #[arg(long)]
        out: PathBuf,
        /// Names to make certificates for, comma-separated (`node-1,node-2,client`).
        #[arg(long, value_delimiter = ',', required = true)]
        names: Vec<String>,
    },
}

/// Runs `rafka tls ...`.
pub fn tls(cmd: TlsCommand) -> anyhow::Result<()> {
    match cmd {
        TlsCommand::DevCerts { out, names } => {
            let ca = DevCa::create(&out, "ca").map_err(anyhow::Error::msg)?;
            println!("{}", ca.cert_file.display());
            for name in names {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    anyhow::bail!("a certificate name is letters, digits, - and _: `{name}`");
                }
                let cert = ca.issue(&out, &name, &[]).map_err(anyhow::Error::msg)?;
                println!("{} {}", cert.cert_file.display(), cert.key_file.display());
            }
            Ok(())
        }
    }
}
