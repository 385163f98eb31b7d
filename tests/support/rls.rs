//! Envoy's rate limit service from a test: its `[rls]` section over a YAML file, envoy-types'
//! client, and the parts of an answer tests compare.

use std::io::Write;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::transport::Channel;

use super::TestApp;

/// The `[rls]` section serving `yaml` (written to a file kept for the test's life), with
/// `extra` TOML after it.
pub fn rls_toml(yaml: &str, extra: &str) -> (tempfile::NamedTempFile, String) {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let toml = format!(
        "[rls]\nlisten = \"127.0.0.1:0\"\nconfig = [{:?}]\n{extra}",
        file.path().display().to_string()
    );
    (file, toml)
}

/// envoy-types' client, connected to `app`'s rate limit port.
pub async fn client(app: &TestApp) -> RateLimitServiceClient<Channel> {
    let addr = app.rls_addr.expect("rls.listen is set");
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("the service accepts gRPC")
}

/// envoy-types' client.
pub type Client = RateLimitServiceClient<Channel>;

/// envoy-types' client on the rate limit port `port`.
pub async fn client_on(port: u16) -> Client {
    Client::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("the rate limit service accepts gRPC")
}

/// A descriptor of `entries`.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

/// The answer to `request`, which must not fail.
pub async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(request)
        .await
        .expect("the service answers")
        .into_inner()
}

/// Each status as (code, limit, remaining), `None` for a status with no limit.
pub fn statuses(response: &RateLimitResponse) -> Vec<(Code, Option<u32>, u32)> {
    response
        .statuses
        .iter()
        .map(|s: &DescriptorStatus| {
            (
                Code::try_from(s.code).unwrap(),
                s.current_limit.as_ref().map(|l| l.requests_per_unit),
                s.limit_remaining,
            )
        })
        .collect()
}

/// The answer's overall code.
pub fn overall(response: &RateLimitResponse) -> Code {
    Code::try_from(response.overall_code).unwrap()
}
