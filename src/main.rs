//! `subscriberd`: parses arguments and runs the server, a key command or
//! the load tool (`bench`). The server's work is done by `subscriber-store`
//! and `subscriber-http`.

mod admin;
mod bench;
mod cli;
mod keys;
mod limits;
mod log;
mod serve;
mod server_key;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A bug must still end in one clear line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("subscriberd: internal error: {info}");
    }));
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Migrate(args) => serve::migrate(&args),
        cli::Command::Keys { command } => keys::run(command),
        cli::Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("subscriberd: {message}");
            ExitCode::FAILURE
        }
    }
}
