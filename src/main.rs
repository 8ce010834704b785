//! `subscriberd`: the standalone server. The HTTP facade it will serve is not
//! built yet (issue 4); until then this binary only says so.

fn main() -> std::process::ExitCode {
    eprintln!("subscriberd: the HTTP server is not built yet; embed subscriber-store instead");
    std::process::ExitCode::FAILURE
}
