//! The `asyncgate` binary: parse the command line, load the config, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use asyncgate::{Config, Gateway, Launch};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// `asyncgate --version`: the release, the commit and the features built in.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ASYNCGATE_COMMIT"),
    ", features: ",
    env!("ASYNCGATE_FEATURES"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "asyncgate",
    version = VERSION,
    about = "Turns slow synchronous HTTP routes into asynchronous jobs"
)]
struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        env = "ASYNCGATE_CONFIG",
        default_value = "config/asyncgate.toml"
    )]
    config: PathBuf,
    /// How log lines are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and print the routes it defines.
    Check,
    /// Ask the running gateway's admin listener whether it is alive (or,
    /// with --ready, ready); exit 0 if so, 1 if not. For container health
    /// checks.
    Health {
        /// Ask /readyz instead of /healthz.
        #[arg(long)]
        ready: bool,
        /// The admin listener's address; without it, the one the config's
        /// [admin] section names (the rest of the file is not read).
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
    },
    /// Print the shell's completion script for asyncgate, e.g.
    /// `asyncgate completions bash > /etc/bash_completion.d/asyncgate`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g.
    /// `asyncgate man > /usr/local/share/man/man1/asyncgate.1`.
    Man,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Exit code for a config the gateway refuses to start with.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Need no config, or only its admin address.
    match cli.command {
        Some(Command::Completions { shell }) => return completions(shell),
        Some(Command::Man) => return man(),
        Some(Command::Health { ready, admin }) => return health(&cli.config, admin, ready),
        Some(Command::Check) | None => {}
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("asyncgate: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match cli.command {
        Some(Command::Check) => {
            print!("{}", config.describe());
            return ExitCode::SUCCESS;
        }
        Some(Command::Health { .. } | Command::Completions { .. } | Command::Man) | None => {}
    }
    // Before any thread starts: it takes the sockets handed to this process
    // and clears the variables that handed them over.
    let launch = Launch::from_env();
    let _logging = asyncgate::logging::init(match cli.log_format {
        LogFormat::Text => asyncgate::logging::Format::Text,
        LogFormat::Json => asyncgate::logging::Format::Json,
    });
    // Kept to the end of main: dropped, it exports the spans still batched.
    let _telemetry = match asyncgate::telemetry::Telemetry::start(config.tracing()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = e, "cannot start tracing");
            return ExitCode::FAILURE;
        }
    };
    // The first worker runs here; the gateway starts one thread per further worker.
    match runtime() {
        Some(runtime) => runtime.block_on(serve(config, launch)),
        None => ExitCode::FAILURE,
    }
}

async fn serve(config: Config, launch: Launch) -> ExitCode {
    let listen = config.listen();
    let gateway = match Gateway::launch(config, launch).await {
        Ok(gateway) => gateway,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let pid = std::process::id();
    match gateway.admin_addr() {
        Some(admin) => tracing::info!(addr = %gateway.local_addr(), %admin, pid, "listening"),
        None => tracing::info!(addr = %gateway.local_addr(), pid, "listening; no admin listener"),
    }
    let report = gateway.run(asyncgate::shutdown::signal()).await;
    if report.is_clean() {
        tracing::info!("drained cleanly");
    } else {
        tracing::warn!(
            connections_cut = report.connections_cut,
            jobs_put_back = report.jobs.jobs_put_back,
            jobs_failed = report.jobs.jobs_failed,
            "drain timeout passed; running jobs that may be sent again were put back to queued, the others failed"
        );
    }
    ExitCode::SUCCESS
}

/// Written whole from memory: clap_complete panics on a write error.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "asyncgate", &mut script);
    print_whole(&script, "the completion script")
}

fn man() -> ExitCode {
    let mut page = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut page) {
        Ok(()) => print_whole(&page, "the manual page"),
        Err(e) => {
            eprintln!("asyncgate: cannot render the manual page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `what`; a reader that stops early (`| head`) is no error.
fn print_whole(bytes: &[u8], what: &str) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asyncgate: cannot write {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health(config: &std::path::Path, admin: Option<std::net::SocketAddr>, ready: bool) -> ExitCode {
    let named = match admin {
        Some(addr) => Ok(Some(addr)),
        None => Config::admin_address(config),
    };
    let mut addr = match named {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            eprintln!("asyncgate: the admin listener is turned off ([admin] enabled = false)");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("asyncgate: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    // A wildcard address is reached through loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let path = if ready { "/readyz" } else { "/healthz" };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(asyncgate::probe(addr, path)) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("asyncgate: {addr}{path} answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("asyncgate: {addr}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("asyncgate: cannot start the runtime: {e}"))
        .ok()
}
