//! The `deltamv` binary: parses the command line and hands over to [`deltamv::cli`].

fn main() -> std::process::ExitCode {
    deltamv::cli::main()
}
