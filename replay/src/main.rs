fn main() -> std::process::ExitCode {
    epk_replay::cli::main_with(epk_replay::cli::Registry::builtin())
}
