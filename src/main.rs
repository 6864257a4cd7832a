use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = switchyard::cli::Cli::parse();
    switchyard::cli::init_tracing(&cli.config);
    match switchyard::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
