//! Outgoing calls to Sim: a run's webhook and an approval's resume URL. One
//! attempt each (they start work: no blind retry), no redirects followed, a
//! timeout from config, and a reason a person can read when it fails.

use std::time::Duration;

/// Posts JSON to Sim.
#[derive(Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    timeout: Duration,
}

impl Webhooks {
    /// A client with the configured timeout.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("esprit-edge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, timeout })
    }

    /// Posts `body`; `Ok` on a 2xx answer, otherwise why not.
    pub async fn post(&self, url: &reqwest::Url, body: &serde_json::Value) -> Result<u16, String> {
        // Webhook URLs are secrets: no message may carry one.
        match self
            .client
            .post(url.clone())
            .json(body)
            .send()
            .await
            .map_err(reqwest::Error::without_url)
        {
            Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
            Ok(resp) => Err(format!("webhook answered {}", resp.status())),
            Err(e) if e.is_timeout() => Err(format!("webhook timed out after {:?}", self.timeout)),
            Err(e) if e.is_connect() => Err(format!("webhook unreachable: {}", root_cause(&e))),
            Err(e) => Err(format!("webhook failed: {}", root_cause(&e))),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
