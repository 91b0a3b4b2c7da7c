//! The `rafka` command: run a broker, manage topics, produce and consume from the shell.

fn main() -> std::process::ExitCode {
    rafka_broker::cli::main()
}
