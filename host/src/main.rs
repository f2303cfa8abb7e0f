//! The `busbar` binary: parses arguments, sets up logging, hands over to
//! [`busbar::cli`].

fn main() -> std::process::ExitCode {
    let cli = busbar::cli::Cli::from_args();
    busbar::cli::init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("busbar: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(busbar::cli::main(cli))
}
