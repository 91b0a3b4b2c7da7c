//! `rafka auth ...`: clients and signing keys of the built-in authorization server.

use std::io::BufRead;

use rafka_proto::v1;

use super::Connection;

/// `rafka auth ...`
#[derive(clap::Subcommand)]
pub enum AuthCommand {
    /// Clients of the built-in authorization server.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Make a new signing key (tokens of the old ones stay valid until they expire).
    RotateKey,
    /// Print the argon2 hash of a secret read from standard input, for a client in the
    /// config (`[auth.clients.NAME] secret_hash = "..."`).
    HashSecret,
}

/// `rafka auth client ...`
#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Create a client; its secret is printed once.
    Create {
        /// Client id (the principal of its tokens).
        id: String,
        /// A role its tokens carry (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List clients and their roles.
    List,
    /// Delete a client (its tokens stay valid until they expire).
    Delete {
        /// Client id.
        id: String,
    },
}

/// Runs `rafka auth ...`.
pub async fn auth(conn: &Connection, cmd: AuthCommand) -> anyhow::Result<()> {
    if let AuthCommand::HashSecret = cmd {
        let mut secret = String::new();
        std::io::stdin().lock().read_line(&mut secret)?;
        let secret = secret.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            anyhow::bail!("no secret on standard input");
        }
        println!(
            "{}",
            crate::auth::issuer::hash_secret(secret).map_err(anyhow::Error::msg)?
        );
        return Ok(());
    }
    let admin = conn.admin().await?;
    match cmd {
        AuthCommand::Client(ClientCommand::Create { id, roles }) => {
            let secret = admin.create_client(&id, roles).await?;
            println!("created client {id}");
            println!("secret: {secret}");
            eprintln!("(the secret is shown this once; the cluster keeps only its hash)");
        }
        AuthCommand::Client(ClientCommand::List) => {
            for v1::ClientInfo { id, roles } in admin.list_clients().await? {
                println!("{id}\t{}", roles.join(","));
            }
        }
        AuthCommand::Client(ClientCommand::Delete { id }) => {
            admin.delete_client(&id).await?;
            println!("deleted client {id}");
        }
        AuthCommand::RotateKey => {
            let kid = admin.rotate_signing_key().await?;
            println!("new signing key {kid}");
        }
        AuthCommand::HashSecret => unreachable!("answered above"),
    }
    Ok(())
}
