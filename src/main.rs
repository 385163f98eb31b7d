//! The `tollgate` binary: read the configuration, then serve, print it, or name keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tollgate::config::Settings;

use axum::http::Method;
use tollgate::caller::{address, RequestFacts};
use tollgate::scope::Dimension;
use tollgate::{Limiter, MemoryStore};

/// mimalloc in place of glibc's malloc: a Redis-backed request makes about twice the
/// allocations of one without a limiter, some of them large (fred's 7 KB futures), and mimalloc
/// spends less CPU on them (BENCHMARKS.md, "The allocator"). `--no-default-features` builds
/// with the system's allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A rate limiter for HTTP services, deciding atomically in Redis.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version)]
struct Cli {
    /// The configuration file (default: $TOLLGATE_CONFIG, then ./tollgate.toml if present).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print the effective configuration, secrets redacted, and exit.
    CheckConfig,
    /// Print the Redis key of each policy for USER, for `redis-cli GET` or `PTTL`.
    Key {
        /// The caller's name, as the identity header carries it.
        user: String,
        /// The client address, for policies keyed by ip.
        #[arg(long, value_name = "ADDR")]
        ip: Option<std::net::IpAddr>,
        /// The route, for policies keyed by route (the pattern, like `/user`).
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
    },
}

/// Exit code for a configuration mistake, the same as for a command-line mistake.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("tollgate: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    // Serving reports them through the logger, once it is set up, with every other log line.
    if !matches!(command, Command::Serve) {
        for warning in &settings.warnings {
            eprintln!("tollgate: warning: {warning}");
        }
    }
    match command {
        Command::CheckConfig => {
            print!("{}", settings.effective_toml());
            ExitCode::SUCCESS
        }
        Command::Key { user, ip, route } => print_keys(&settings, &user, ip, route.as_deref()),
        Command::Serve => serve(settings),
    }
}

/// Prints the key of each policy for this caller, the same way requests are keyed; a policy
/// that needs an address or a route not given is named on stderr instead.
fn print_keys(
    settings: &Settings,
    user: &str,
    ip: Option<IpAddr>,
    route: Option<&str>,
) -> ExitCode {
    let limiter = Limiter::new(Arc::new(MemoryStore::new()), settings.rules.clone())
        .with_keys(settings.key_builder())
        .with_on_missing(settings.on_missing);
    let ip = ip.map(|ip| address::bucket(ip, settings.identity.ipv6_prefix));
    let facts = RequestFacts {
        user: Some(user.as_bytes()),
        ip,
        method: &Method::GET,
        path: route.unwrap_or("/"),
        route: route.unwrap_or("/"),
    };
    for rule in limiter.rules() {
        let by = rule.scope.by.dimensions();
        let needs_route = by.contains(&Dimension::Route) && route.is_none();
        match limiter.key_of(rule, &facts).filter(|_| !needs_route) {
            Some(key) => println!("{key}"),
            None => eprintln!(
                "# {}: keyed by {:?}; pass --ip and/or --route to see its key",
                rule.policy.name(),
                by.iter().map(|d| d.as_str()).collect::<Vec<_>>()
            ),
        }
    }
    ExitCode::SUCCESS
}

fn serve(settings: Settings) -> ExitCode {
    tollgate::telemetry::init(settings.log_format);
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    // A low soft limit (often 1,024) would cap connections needlessly: the hard limit is the
    // administrator's word, the soft one only a default.
    match tollgate::http::server::raise_descriptor_limit() {
        Ok(limit) => tracing::debug!(limit, "descriptor limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the descriptor limit"),
    }
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let served = runtime.block_on(async {
        let app = tollgate::setup::app(&settings)
            .await
            .map_err(|e| format!("cannot start the store: {e}"))?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        // Memory a flood left behind goes back to the system, not only to the allocator.
        #[cfg(feature = "mimalloc")]
        tokio::spawn(give_back_memory());
        let (first, second) = signals();
        tokio::select! {
            served = tollgate::http::run_with(listener, app, settings.server.clone(), first) => {
                served.map_err(|e| format!("server error: {e}"))
            }
            () = second => {
                tracing::warn!("second signal: exiting without waiting for open requests");
                Ok(())
            }
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("tollgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Lets mimalloc return freed memory to the system while the service is idle.
///
/// mimalloc purges pages left empty (a swept flood's, say) a second after they empty, but only
/// when some thread next enters the allocator: an idle service would keep them resident. One
/// collect a second runs the purges that are due, and returns at once when none are.
#[cfg(feature = "mimalloc")]
async fn give_back_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        // SAFETY: mi_collect takes no arguments to misuse and may run on any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// Two futures: the first completes on the first SIGINT or SIGTERM, so open requests drain;
/// the second on the next one, so an operator who insists is not made to wait out the grace.
fn signals() -> (
    impl std::future::Future<Output = ()> + Send + 'static,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
    // Registered now, not in the task, so that no signal finds the default action in place.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down; a second signal exits at once");
        let _ = first_tx.send(());
        signals.next().await;
        let _ = second_tx.send(());
    });
    let first = async move {
        let _ = first_rx.await;
    };
    let second = async move {
        let _ = second_rx.await;
    };
    (first, second)
}

/// SIGINT and SIGTERM, each registered once for the life of the process.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Completes on the next SIGINT or SIGTERM (ctrl-c elsewhere); never if none can be heard.
    async fn next(&mut self) {
        #[cfg(unix)]
        match &mut self.streams {
            Some((interrupt, terminate)) => tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            },
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
