//! The `url` target: `POST` the event to an Invoke-API-compatible endpoint.

use std::time::Duration;

use bytes::Bytes;

use super::{Outcome, Reply, classify, timed_out};

pub struct HttpTarget {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl HttpTarget {
    pub fn new(url: &str, timeout: Duration) -> HttpTarget {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("the HTTP client builds with a plain configuration");
        HttpTarget {
            client,
            url: url.to_string(),
            timeout,
        }
    }

    pub async fn invoke(&self, event: Bytes) -> Outcome {
        let request = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Amz-Invocation-Type", "RequestResponse")
            .timeout(self.timeout)
            .body(event);
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return self.failed(err),
        };
        let status = response.status().as_u16();
        let function_error = response
            .headers()
            .get("X-Amz-Function-Error")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match response.bytes().await {
            Ok(body) => classify(Reply {
                status,
                function_error,
                body: body.to_vec(),
            }),
            Err(err) => self.failed(err),
        }
    }

    /// A request that got no answer: a timeout is the function running out of time, any
    /// other error means the function was not reached.
    fn failed(&self, err: reqwest::Error) -> Outcome {
        if err.is_timeout() && !err.is_connect() {
            return timed_out(self.timeout);
        }
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Outcome::CouldNotInvoke { detail }
    }
}
