use clap::Parser;
use edgewatt_exporter::cli::{self, Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = cli::config_path_from_args(&args) {
        if let Err(e) = cli::load_config_file(&path) {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    let mut parsed = Cli::parse_from(&args);
    if parsed.command.is_none() {
        // `serve` is the default subcommand; re-parse so its flags get their env/defaults.
        let mut with_serve = args.clone();
        with_serve.push("serve".into());
        parsed = Cli::parse_from(&with_serve);
    }
    let (filter, bad_filter) = cli::log_filter(std::env::var("RUST_LOG").ok().as_deref());
    // stderr, except under `top`'s full-screen UI, whose warnings pane keeps WARN/ERROR lines.
    use edgewatt_exporter::top::log::{Pane, StderrUnlessTui};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(StderrUnlessTui);
    match parsed.common.log_format {
        LogFormat::Json => builder.json().finish().with(Pane).with(filter).init(),
        LogFormat::Text => builder.finish().with(Pane).with(filter).init(),
    }
    if let Some(e) = bad_filter {
        tracing::warn!("RUST_LOG: {e}; logging at info");
    }
    let result = match parsed.command {
        Some(Command::Top(top)) => edgewatt_exporter::app::top(parsed.common, top),
        #[cfg(feature = "serve")]
        Some(Command::Serve(serve)) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(edgewatt_exporter::app::serve(parsed.common, serve))),
        #[cfg(not(feature = "serve"))]
        Some(Command::Serve(_)) => Err(edgewatt_exporter::app::not_built("serve", "serve")),
        None => unreachable!("serve is inserted above"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
