//! The `tollgate` binary: read the configuration, then serve, print it, name keys, or inspect or
//! reset a caller.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tollgate::config::Settings;

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
    /// Give USER a fresh quota (every policy, or --policy NAME), on every running instance.
    Reset {
        /// The caller's name, as the identity header carries it.
        user: String,
        /// Only this policy's count.
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// The client address, for policies keyed by ip.
        #[arg(long, value_name = "ADDR")]
        ip: Option<std::net::IpAddr>,
        /// The route, for policies keyed by route (the pattern, like `/user`).
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
    },
    /// Print where each policy stands for USER, read from Redis without spending anything.
    Inspect {
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
    if matches!(cli.command, None | Some(Command::Serve)) {
        // SIGHUP reloads the configuration; until the reloader listens for it, which takes a
        // moment after startup, it must not end the process, as it would by default.
        // SAFETY: SIG_IGN installs no handler, and no other thread runs yet.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    }
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
        Command::Key { user, ip, route } => {
            for key in settings.caller_keys(&user, ip, route.as_deref()) {
                match key {
                    Ok(key) => println!("{key}"),
                    Err(unkeyed) => eprintln!("{unkeyed}"),
                }
            }
            ExitCode::SUCCESS
        }
        Command::Inspect { user, ip, route } => inspect(&settings, &user, ip, route.as_deref()),
        Command::Reset {
            user,
            policy,
            ip,
            route,
        } => reset(&settings, &user, ip, route.as_deref(), policy.as_deref()),
        Command::Serve => serve(settings, cli.config),
    }
}

fn reset(
    settings: &Settings,
    user: &str,
    ip: Option<std::net::IpAddr>,
    route: Option<&str>,
    policy: Option<&str>,
) -> ExitCode {
    let reset = tollgate::reset::reset(settings, user, ip, route, policy);
    finish(block_on(reset).map(|r| (r.to_string(), r.unkeyed)))
}

fn inspect(
    settings: &Settings,
    user: &str,
    ip: Option<std::net::IpAddr>,
    route: Option<&str>,
) -> ExitCode {
    let inspected = tollgate::inspect::inspect(settings, user, ip, route);
    finish(block_on(inspected).map(|r| (r.to_string(), r.unkeyed)))
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    runtime.block_on(future)
}

/// Prints an operator command's report, and on stderr the policies it could not key, or its
/// error; the exit code says which.
fn finish(
    done: Result<(String, Vec<tollgate::config::Unkeyed>), tollgate::command::CommandError>,
) -> ExitCode {
    match done {
        Ok((report, unkeyed)) => {
            print!("{report}");
            for unkeyed in &unkeyed {
                eprintln!("{unkeyed}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tollgate: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn serve(settings: Settings, file: Option<PathBuf>) -> ExitCode {
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
        let (listen, server) = (settings.listen, settings.server.clone());
        let (served, reloader) = tollgate::reload::Reloader::start(settings, file)
            .await
            .map_err(|e| format!("cannot start the store: {e}"))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let rls = match served.rls {
            Some((listen, router)) => {
                let listener = TcpListener::bind(listen)
                    .await
                    .map_err(|e| format!("cannot listen on {listen} (rls.listen): {e}"))?;
                Some((listener, router))
            }
            None => None,
        };
        tokio::spawn(reloader.run());
        // Memory a flood left behind goes back to the system, not only to the allocator.
        #[cfg(feature = "mimalloc")]
        tokio::spawn(give_back_memory());
        tollgate::http::run_until_signalled(listener, served.http, server, rls)
            .await
            .map_err(|e| format!("server error: {e}"))
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
