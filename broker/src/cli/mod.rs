//! The `rafka` command line (clap).
//!
//! ```text
//! rafka start [--config F] [--node-id N] [--listen ADDR] [--data-dir DIR] [--peers 1=A,2=B]
//! rafka dev-cluster [--nodes 3] [--tls] [--auth]   N brokers on loopback, prints the bootstrap list
//! rafka topic create|list|describe|delete|alter ...
//! rafka produce TOPIC        one record per stdin line
//! rafka consume TOPIC [--from-beginning] [--offset N] [--partition P] [--max-messages N]
//! rafka cluster status
//! rafka group list | describe G | reset-offsets G --topic T --to-... | delete G
//! rafka acl add|remove --principal User:P (--topic T | --group G | --cluster) --operation OP
//! rafka acl list
//! rafka auth client create|list|delete | rotate-key | hash-secret
//! rafka tls dev-certs --out DIR --names a,b
//! ```
//!
//! Global `--bootstrap ADDR[,ADDR]` (env `RAFKA_BOOTSTRAP`), default `127.0.0.1:9092`;
//! global `--tls-ca`, `--tls-cert`, `--tls-key`: TLS for a client command, and the
//! broker's own files for `rafka start`; global `--token` or `--client-id`,
//! `--client-secret`, `--token-url` (env `RAFKA_TOKEN`, ...): credentials of a client
//! command. Errors print one line and exit non-zero.

mod acls;
mod auth;
mod clients;
mod groups;
mod start;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rafka: a distributed commit-log broker.
#[derive(Parser)]
#[command(name = "rafka", version, about)]
pub struct Cli {
    /// Brokers to bootstrap from, comma-separated.
    #[arg(
        long,
        global = true,
        env = "RAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: Command,
}

/// TLS files: a client command's (the CA, and a client certificate if the brokers want
/// one), or a broker's own (`rafka start`: its certificate, key and the cluster CA).
#[derive(clap::Args, Clone, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) brokers are verified against; with it, clients speak TLS.
    /// For `rafka start`: the cluster CA (turns TLS on, with --tls-cert and --tls-key).
    #[arg(long, global = true, env = "RAFKA_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// Certificate chain (PEM): a client's certificate, or a broker's own.
    #[arg(long, global = true, env = "RAFKA_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "RAFKA_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
    /// Bearer token for brokers that check them (a client command; prefer the
    /// environment variable: a flag shows in the process list).
    #[arg(long, global = true, env = "RAFKA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// OAuth2 client id: tokens are fetched from --token-url with it and the secret.
    #[arg(long, global = true, env = "RAFKA_CLIENT_ID")]
    client_id: Option<String>,
    /// The client's secret (prefer the environment variable).
    #[arg(
        long,
        global = true,
        env = "RAFKA_CLIENT_SECRET",
        hide_env_values = true
    )]
    client_secret: Option<String>,
    /// The authorization server's token endpoint, e.g. the built-in one's
    /// `https://broker:9644/oauth/token`.
    #[arg(long, global = true, env = "RAFKA_TOKEN_URL")]
    token_url: Option<String>,
}

/// Where a client command connects, and how.
pub struct Connection {
    /// Brokers, comma-separated.
    pub bootstrap: String,
    /// TLS (none: plaintext).
    pub tls: Option<rafka_client::TlsConfig>,
    /// Credentials (none: anonymous).
    pub credentials: Option<rafka_client::Credentials>,
}

impl Connection {
    fn new(bootstrap: String, args: &TlsArgs) -> anyhow::Result<Self> {
        let tls = match &args.tls_ca {
            Some(ca) => Some(rafka_client::TlsConfig::from_files(
                ca,
                args.tls_cert.as_deref(),
                args.tls_key.as_deref(),
            )?),
            None if args.tls_cert.is_some() || args.tls_key.is_some() => {
                anyhow::bail!("--tls-cert and --tls-key need --tls-ca (the brokers' CA)")
            }
            None => None,
        };
        let credentials = match (
            &args.token,
            &args.client_id,
            &args.client_secret,
            &args.token_url,
        ) {
            (Some(_), Some(_), _, _) => {
                anyhow::bail!("give either --token or --client-id, not both")
            }
            (Some(t), None, _, _) => Some(rafka_client::Credentials::Token(t.clone())),
            (None, Some(id), Some(secret), Some(url)) => {
                Some(rafka_client::Credentials::ClientSecret {
                    token_url: url.clone(),
                    client_id: id.clone(),
                    client_secret: secret.clone(),
                })
            }
            (None, Some(_), _, _) => {
                anyhow::bail!("--client-id needs --client-secret and --token-url")
            }
            (None, None, _, _) => None,
        };
        Ok(Self {
            bootstrap,
            tls,
            credentials,
        })
    }

    /// An admin client of the cluster.
    pub async fn admin(&self) -> anyhow::Result<rafka_client::Admin> {
        Ok(rafka_client::Admin::connect_with(
            &self.bootstrap,
            rafka_client::AdminConfig {
                tls: self.tls.clone(),
                credentials: self.credentials.clone(),
            },
        )
        .await?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (with no flags: one node on 127.0.0.1:9092, data in ./rafka-data).
    Start(start::StartArgs),
    /// Run a test cluster of N brokers on loopback in this process (Ctrl-C stops it).
    DevCluster(start::DevClusterArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(clients::TopicCommand),
    /// Produce one record per line of standard input.
    Produce(clients::ProduceArgs),
    /// Print records of a topic.
    Consume(clients::ConsumeArgs),
    /// Cluster information.
    #[command(subcommand)]
    Cluster(clients::ClusterCommand),
    /// Consumer groups: list, describe (lag), reset offsets, delete.
    #[command(subcommand)]
    Group(groups::GroupCommand),
    /// Access control entries: add, list, remove.
    #[command(subcommand)]
    Acl(acls::AclCommand),
    /// The built-in authorization server: clients, signing keys.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Throwaway TLS certificates for trying TLS out.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

/// Threads for blocking work at most (see [`main`]).
const MAX_BLOCKING_THREADS: usize = 64;

/// On SIGPIPE, exits at once if standard output is a pipe whose reader is gone, and
/// otherwise ignores it: a socket a broker closed (a TLS handshake it refused) raises
/// SIGPIPE too, and must be an error with a message, not a silent death.
fn end_quietly_when_stdout_closes() {
    extern "C" fn on_sigpipe(_: libc::c_int) {
        let mut fd = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll and _exit are async-signal-safe; `fd` lives on this stack.
        unsafe {
            if libc::poll(&mut fd, 1, 0) == 1 && fd.revents & libc::POLLERR != 0 {
                libc::_exit(141);
            }
        }
    }
    // SAFETY: installing a handler that only calls async-signal-safe functions, before
    // any thread is started.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigpipe as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Start(_) | Command::DevCluster(_)) {
        // Client commands end quietly when their output is closed (`rafka ... | head`),
        // like other Unix tools; brokers keep ignoring SIGPIPE (a closed socket is an
        // error there, not a reason to exit).
        end_quietly_when_stdout_closes();
    }
    // Blocking work (syncs, opening files) is short; tokio's default of up to 512
    // threads let a broker creating thousands of partitions run hundreds, each with
    // its stack and allocator heap, which stayed in its memory long after.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let conn = || Connection::new(cli.bootstrap.clone(), &cli.tls);
        match cli.command {
            Command::Start(args) => start::run(args, cli.tls).await,
            Command::DevCluster(args) => start::dev_cluster(args).await,
            Command::Topic(cmd) => clients::topic(&conn()?, cmd).await,
            Command::Produce(args) => clients::produce(&conn()?, args).await,
            Command::Consume(args) => clients::consume(&conn()?, args).await,
            Command::Cluster(cmd) => clients::cluster(&conn()?, cmd).await,
            Command::Group(cmd) => groups::group(&conn()?, cmd).await,
            Command::Acl(cmd) => acls::acl(&conn()?, cmd).await,
            Command::Auth(cmd) => auth::auth(&conn()?, cmd).await,
            Command::Tls(cmd) => tls::tls(cmd),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
