//! The load benchmark's floor: what a limiter costs at the least, with nothing but the work every
//! admitted response requires.
//!
//! It serves the baseline: tollgate's own routes with no limits, wrapped in one layer built from
//! the crate's public API alone. Per request naming a caller, that layer hashes the name with
//! SHA-256 (as a key's tag is hashed), counts it in a fixed window of the configuration's first
//! policy in a map, and adds the five headers of an admitted response: `RateLimit-Policy`,
//! `RateLimit` and the three `X-RateLimit-*`. Over the limit it answers a bare 429.
//!
//! It has no metrics, no failure modes, no over-limit cache, no other policies or algorithms,
//! and it never forgets a caller: a measuring stick, not a limiter to run.
//!
//! `benches/load.sh` runs it beside scenario 2, the memory store, so that scenario's ratio can
//! be read against the least any limiter keeping these promises would cost on the same machine.
//!
//! ```sh
//! cargo run --release --example floor -- --config tollgate.toml
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tollgate::http::AppState;
use tollgate::limiter::Rule;
use tollgate::middleware::headers;
use tollgate::{Algorithm, HeaderMode, Limiter, MemoryStore, Settings};
use tower::Service;

/// The tollgate binary's allocator, so that the floor and tollgate differ only in their work.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The one policy the floor enforces, with its constant headers rendered once.
struct Floor {
    identity: HeaderName,
    limit: u64,
    window_ms: u64,
    /// `"<name>";r=`: the start of every `RateLimit` value.
    quota_prefix: String,
    policy_header: HeaderValue,
    limit_header: HeaderValue,
    /// Per caller's SHA-256: the window's start in Unix milliseconds, and its count.
    counts: Mutex<HashMap<[u8; 32], (u64, u64)>>,
}

/// What counting a request found.
enum Counted {
    /// The request names no caller: it passes uncounted.
    Unnamed,
    /// The caller has used the window's whole limit.
    Over,
    /// Counted: what is left, and the seconds until the window turns.
    Admitted { remaining: u64, reset_secs: u64 },
}

/// The floor as a tower service, boxed as tollgate's own layer is, so the two differ only in
/// the work each does per request.
#[derive(Clone)]
struct FloorService<S> {
    inner: S,
    floor: Arc<Floor>,
}

impl<S> Service<Request> for FloorService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let floor = self.floor.clone();
        Box::pin(async move {
            match floor.count(&request) {
                Counted::Unnamed => inner.call(request).await,
                Counted::Over => Ok(StatusCode::TOO_MANY_REQUESTS.into_response()),
                Counted::Admitted {
                    remaining,
                    reset_secs,
                } => {
                    let mut response = inner.call(request).await?;
                    floor.apply(response.headers_mut(), remaining, reset_secs);
                    Ok(response)
                }
            }
        })
    }
}

impl Floor {
    /// Counts the request's caller in the current window.
    fn count(&self, request: &Request) -> Counted {
        let Some(name) = request.headers().get(&self.identity) else {
            return Counted::Unnamed;
        };
        let tag: [u8; 32] = Sha256::digest(name.as_bytes()).into();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let window_start = now_ms - now_ms % self.window_ms;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = counts.entry(tag).or_insert((window_start, 0));
        if entry.0 != window_start {
            *entry = (window_start, 0);
        }
        if entry.1 == self.limit {
            return Counted::Over;
        }
        entry.1 += 1;
        Counted::Admitted {
            remaining: self.limit - entry.1,
            reset_secs: (window_start + self.window_ms - now_ms).div_ceil(1000),
        }
    }

    /// The five headers of an admitted response, with as little work as they allow.
    fn apply(&self, map: &mut HeaderMap, remaining: u64, reset_secs: u64) {
        let mut quota = [0; QUOTA_MAX];
        let len = {
            let mut rest = &mut quota[..];
            write!(rest, "{}{remaining};t={reset_secs}", self.quota_prefix)
                .expect("the longest value fits");
            QUOTA_MAX - rest.len()
        };
        map.insert(headers::RATELIMIT_POLICY, self.policy_header.clone());
        map.insert(
            headers::RATELIMIT,
            HeaderValue::from_bytes(&quota[..len]).expect("a policy name is header-safe"),
        );
        map.insert(headers::X_RATELIMIT_LIMIT, self.limit_header.clone());
        map.insert(headers::X_RATELIMIT_REMAINING, HeaderValue::from(remaining));
        map.insert(headers::X_RATELIMIT_RESET, HeaderValue::from(reset_secs));
    }
}

/// The longest `RateLimit` value: `"<name>";r=<digits>;t=<digits>`, names being at most 64
/// bytes and a `u64` at most 20 digits.
const QUOTA_MAX: usize = 64 + 5 + 20 + 3 + 20;

/// `text`, kept for the process's life: a static header value is shared without counting.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

fn main() -> ExitCode {
    let config = std::env::args_os()
        .skip_while(|arg| arg != "--config")
        .nth(1)
        .map(PathBuf::from);
    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("floor: {error}");
            return ExitCode::from(2);
        }
    };
    let Some(policy) = settings.rules.first().map(|rule| &rule.policy) else {
        eprintln!("floor: the configuration has no [[limits]] to enforce");
        return ExitCode::from(2);
    };
    if settings.headers != HeaderMode::All {
        eprintln!(
            "floor: headers: the floor always sends the five headers of an admitted response"
        );
        return ExitCode::from(2);
    }
    if policy.algorithm() != Algorithm::FixedWindow {
        eprintln!("floor: limits[0]: the floor counts fixed windows only");
        return ExitCode::from(2);
    }
    // With the same subscriber and filter as tollgate, so neither pays for logging the other does
    // not.
    tollgate::telemetry::init(settings.log_format);
    let name = policy.name().as_str();
    let floor = Arc::new(Floor {
        identity: settings.identity.header.clone(),
        limit: policy.limit(),
        window_ms: policy.window().as_millis(),
        quota_prefix: format!("\"{name}\";r="),
        policy_header: HeaderValue::from_static(leak(format!(
            "\"{name}\";q={};w={}",
            policy.limit(),
            policy.quota_window_secs()
        ))),
        limit_header: HeaderValue::from_static(leak(policy.limit().to_string())),
        counts: Mutex::default(),
    });
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let served = runtime.block_on(async {
        // tollgate's routes without limits, as the baseline serves them, inside the floor.
        let state = AppState {
            limiter: Arc::new(Limiter::new(
                Arc::new(MemoryStore::new()),
                Vec::<Rule>::new(),
            )),
            identity: Arc::new(settings.identity.clone()),
        };
        let layer = tower::layer::layer_fn(move |inner| FloorService {
            inner,
            floor: floor.clone(),
        });
        let app = tollgate::http::router(state, HeaderMode::All).layer(layer);
        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tollgate::http::run(listener, app, ctrl_c).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floor: {error}");
            ExitCode::FAILURE
        }
    }
}
