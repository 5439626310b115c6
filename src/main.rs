//! The `relstat` binary: everything lives in the library; see `relstat::cli`.

fn main() -> std::process::ExitCode {
    relstat::cli::main()
}
