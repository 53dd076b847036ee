use std::process::ExitCode;

fn main() -> ExitCode {
    scalpel::cli::main()
}
