fn main() -> std::process::ExitCode {
    epk_replay::broken_pipe::exit_quietly();
    epk_replay::cli::main_with(epk_replay::cli::Registry::builtin())
}
