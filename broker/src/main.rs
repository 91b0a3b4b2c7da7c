//! The `rafka` command: run a broker, manage topics, produce and consume from the shell.

/// mimalloc: the system allocator hands large buffers (fetch and produce payloads) back
/// to the kernel and faults fresh zeroed pages in for the next one; mimalloc reuses them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rafka_broker::cli::main()
}
